"""The files of cluster/: what Ray's cluster launcher and KubeRay require, shell that parses, real options only.

Fast and offline: the AWS file goes through Ray's own `ray up` validation
(schema and provider defaults, no cloud call); the KubeRay manifests are checked
field by field against what the operator needs; every `cep-sweep`, `cep-sweep aggregate`,
`cep`, `python -m cep.aggregate.cli` and `ray ...` command in cluster/README.md and in
the files is parsed and its options looked up in the click commands themselves.
Also the sweep-file side of the recipes: custom Ray resources in `resources`.
"""

from __future__ import annotations

import copy
import re
import shlex
import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click
import pytest
import yaml

from cep.sweep.spec import SweepError, parse_sweep

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
README = CLUSTER / "README.md"
AWS = CLUSTER / "aws-gpu.yaml"
SBATCH = CLUSTER / "slurm" / "cep-sweep.sbatch"
K8S = CLUSTER / "kubernetes"
RAY_PIN = "2.60.0"  # the Ray version every recipe installs (and the one the tests run)


def load(path: Path) -> dict:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert len(docs) == 1, path
    return docs[0]


def test_the_pinned_ray_is_the_tested_one_and_fits_the_project():
    tomllib = pytest.importorskip("tomllib")
    requirements = pytest.importorskip("packaging.requirements")
    try:
        installed = version("ray")
    except PackageNotFoundError:
        pytest.skip("ray not installed")
    assert installed == RAY_PIN, "update RAY_PIN and every cluster file to the Ray version the tests run"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_req = next(r for r in map(requirements.Requirement, deps) if r.name == "ray")
    assert ray_req.specifier.contains(RAY_PIN)


# ------------------------------------------------------------------ AWS (ray up)
def test_aws_cluster_file_holds_what_ray_up_needs():
    cfg = load(AWS)
    assert cfg["cluster_name"] and cfg["provider"]["type"] == "aws" and cfg["provider"]["region"]
    types = cfg["available_node_types"]
    assert cfg["head_node_type"] in types
    head = types[cfg["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the driver's node runs no trials
    gpu = [t for name, t in types.items() if name != cfg["head_node_type"] and t["resources"].get("GPU", 0) >= 1]
    assert gpu, "a GPU worker type"
    for t in gpu:
        assert 0 <= t["min_workers"] <= t["max_workers"] <= cfg["max_workers"]
        assert t["node_config"]["InstanceType"]
    images = {t["node_config"].get("ImageId") for t in types.values()}
    assert len(images) == 1, "one image (OS, Python) for every node"
    # the same Ray and the same project on every node: the copied checkout, installed with the pinned Ray
    assert cfg["file_mounts"] == {"~/cep": "."}
    setup = cfg["setup_commands"]
    assert any(f'"ray[default]=={RAY_PIN}"' in c and "~/cep" in c and "pip install" in c for c in setup), setup
    assert any("mount -t nfs4" in c and "/mnt/efs" in c for c in setup)  # shared storage on every node
    assert not cfg.get("worker_setup_commands")  # nothing that would make workers differ
    assert any("ray start --head" in c for c in cfg["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in cfg["worker_start_ray_commands"])


def test_aws_cluster_file_passes_rays_own_validation():
    util = pytest.importorskip("ray.autoscaler._private.util")
    pytest.importorskip("jsonschema")
    prepared = util.prepare_config(copy.deepcopy(load(AWS)))  # merges Ray's AWS defaults, as `ray up` does
    util.validate_config(prepared)  # Ray's schema and its checks (head type, worker bounds)
    assert prepared["available_node_types"]["gpu_spot"]["max_workers"] == 8


TORCH_CUDA12_INDEX = re.compile(r"--index-url https://download\.pytorch\.org/whl/cu12\d\b")


def _project_pins() -> dict[str, str]:
    """pyproject's version ranges of torch and torchvision, as the recipes must pin them."""
    tomllib = pytest.importorskip("tomllib")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {d.split(">")[0].split("<")[0].strip(): d for d in deps if d.startswith(("torch>", "torchvision>"))}


def test_aws_nodes_are_locked_down_and_spot_has_an_on_demand_fallback():
    cfg = load(AWS)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]["node_config"]
    # one security group of our own on every node: the launcher then makes none (its default admits SSH from
    # anywhere); the EFS mount targets get the same group, so NFS (2049) is admitted
    groups = {tuple(t["node_config"].get("SecurityGroupIds", ())) for t in types.values()}
    assert len(groups) == 1 and all(g.startswith("sg-") for g in next(iter(groups))), groups
    # a scoped instance profile for the head (the launcher's default has EC2 and S3 full access); none for
    # the workers that run trial code
    assert "instance-profile/" in head["IamInstanceProfile"]["Arn"]
    workers = {n: t for n, t in types.items() if n != cfg["head_node_type"]}
    assert all("IamInstanceProfile" not in t["node_config"] for t in workers.values())
    market = {n: t["node_config"].get("InstanceMarketOptions", {}).get("MarketType") for n, t in workers.items()}
    spot = [t for n, t in workers.items() if market[n] == "spot"]
    ondemand = [t for t in workers.values() if "InstanceMarketOptions" not in t["node_config"]]
    assert spot and ondemand, "spot GPU workers and an on-demand fallback type"
    assert {t["node_config"]["InstanceType"] for t in spot} == {t["node_config"]["InstanceType"] for t in ondemand}
    assert all(t["resources"] == spot[0]["resources"] for t in ondemand)
    # the autoscaler breaks ties between equally fitting types by name, the last first: spot before on demand
    names = sorted(workers, reverse=True)
    assert workers[names[0]] in spot


def test_every_recipe_installs_a_torch_that_runs_on_older_drivers():
    """torch's default CUDA 13 build needs NVIDIA driver >= 580: recipes install a CUDA 12.x build first."""
    pins = _project_pins()
    setup = load(AWS)["setup_commands"]
    i_torch = next(i for i, c in enumerate(setup) if TORCH_CUDA12_INDEX.search(c))
    i_cep = next(i for i, c in enumerate(setup) if "~/cep" in c and "pip install" in c and "ray[default]" in c)
    assert i_torch < i_cep and all(f'"{pin}"' in setup[i_torch] for pin in pins.values()), setup[i_torch]
    docker = (K8S / "Dockerfile").read_text()
    assert re.search(r"^ARG TORCH_CUDA=cu12\d$", docker, re.M) and all(f'"{pin}"' in docker for pin in pins.values())
    assert docker.index("--index-url https://download.pytorch.org/whl/${TORCH_CUDA}") < docker.index('"ray[default]==')
    readme = README.read_text()
    assert readme.count("download.pytorch.org/whl/cu12") >= 2 and "580" in readme and "525" in readme


# ------------------------------------------------------------------ Kubernetes (KubeRay)
def _pods(cluster_spec: dict) -> list[dict]:
    head = cluster_spec["headGroupSpec"]
    return [head["template"]["spec"]] + [g["template"]["spec"] for g in cluster_spec["workerGroupSpecs"]]


POLICY_LABEL, POLICY_VALUE = "app.kubernetes.io/part-of", "cep-sweep"
NODE_CPUS, NODE_GIB = 4, 16  # the documented GPU node type (g4dn.xlarge: 4 vCPUs, 16 GiB, one T4)


def _cpus(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def _gib(q: str) -> float:
    units = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}
    unit = next(u for u in units if q.endswith(u))
    return float(q[: -len(unit)]) * units[unit]


def _check_cluster_spec(spec: dict, where: str, claim: str) -> set[str]:
    assert spec["rayVersion"] == RAY_PIN, where
    head = spec["headGroupSpec"]
    assert isinstance(head["rayStartParams"], dict), where
    assert all(isinstance(v, str) for v in head["rayStartParams"].values()), f"{where}: rayStartParams are strings"
    assert head["rayStartParams"].get("num-cpus") == "0"  # the driver's pod runs no trials
    assert head["template"]["spec"]["containers"][0]["name"] == "ray-head"
    groups = spec["workerGroupSpecs"]
    assert groups, where
    for g in groups:
        assert g["groupName"] and isinstance(g["rayStartParams"], dict), where
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"], where
        limits = g["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1, where
    images = set()
    for pod in _pods(spec):
        container = pod["containers"][0]
        images.add(container["image"])
        mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts == {"results": "/mnt/results"}, where  # every pod sees the results at the same path
        assert volumes["results"]["persistentVolumeClaim"]["claimName"] == claim, where
    assert len(images) == 1, f"{where}: one image for head and workers"
    # locked down: Ray token authentication for every node and the job API (KubeRay makes and passes the token)
    assert spec["authOptions"] == {"mode": "token"}, where
    for pod_template in [head["template"]] + [g["template"] for g in groups]:
        assert pod_template["metadata"]["labels"][POLICY_LABEL] == POLICY_VALUE, where  # the NetworkPolicy's pods
        # the image's non-root user (ray, group users = 100) can write the results volume
        assert pod_template["spec"]["securityContext"]["fsGroup"] == 100, where
    for g in groups:
        pod = g["template"]["spec"]
        res = pod["containers"][0]["resources"]
        # requests below a 4 vCPU / 16 GiB GPU node's capacity (allocatable is less), else pods never schedule
        assert _cpus(res["requests"]["cpu"]) <= NODE_CPUS - 0.5 and _gib(res["requests"]["memory"]) <= NODE_GIB - 3
        assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
        assert "cpu" not in res["limits"], "no CPU limit: trials may use the node's idle CPU"
        assert int(g["rayStartParams"]["num-cpus"]) <= NODE_CPUS  # what Ray schedules trials by, said explicitly
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    return images


def test_kuberay_manifests_hold_what_kuberay_needs():
    pvc = load(K8S / "results-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claim = pvc["metadata"]["name"]

    cluster = load(K8S / "raycluster.yaml")
    assert cluster["apiVersion"] == "ray.io/v1" and cluster["kind"] == "RayCluster" and cluster["metadata"]["name"]
    images = _check_cluster_spec(cluster["spec"], "raycluster.yaml", claim)

    job = load(K8S / "rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob" and job["metadata"]["name"]
    images |= _check_cluster_spec(job["spec"]["rayClusterSpec"], "rayjob.yaml", claim)
    assert len(images) == 1, "the same image in both manifests"
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[0] == "cep-sweep" and (ROOT / entry[1].replace("/home/ray/cep/", "")).exists()
    assert entry[entry.index("--address") + 1] == "auto" and entry[entry.index("--storage") + 1] == "/mnt/results"
    # a retried job runs the entrypoint again on a new cluster: cep-sweep resumes from the volume
    assert job["spec"]["backoffLimit"] >= 1 and job["spec"]["shutdownAfterJobFinishes"] is True
    # no submitter pod whose eviction would fail a multi-day sweep; a deadline that ends the cost
    assert job["spec"]["submissionMode"] in ("HTTPMode", "SidecarMode")
    assert job["spec"]["activeDeadlineSeconds"] >= 24 * 3600


def test_only_the_clusters_own_pods_and_the_operator_reach_the_ray_pods():
    policy = load(K8S / "networkpolicy.yaml")
    assert policy["apiVersion"] == "networking.k8s.io/v1" and policy["kind"] == "NetworkPolicy"
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {POLICY_LABEL: POLICY_VALUE}} and spec["policyTypes"] == ["Ingress"]
    rules = spec["ingress"]
    own = [r for r in rules if r["from"] == [{"podSelector": {"matchLabels": {POLICY_LABEL: POLICY_VALUE}}}]]
    assert len(own) == 1 and "ports" not in own[0]  # Ray's nodes talk on many ports
    others = [r for r in rules if r not in own]
    assert len(others) == 1 and others[0]["ports"] == [{"protocol": "TCP", "port": 8265}]  # the operator: job API
    assert others[0]["from"][0]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "kuberay-operator"}}


def test_the_image_pins_ray_and_holds_the_project():
    text = (K8S / "Dockerfile").read_text()
    assert re.search(rf"^FROM rayproject/ray:{re.escape(RAY_PIN)}-py3\d+-gpu$", text, re.M)
    assert f'pip install --no-cache-dir "ray[default]=={RAY_PIN}" /home/ray/cep' in text
    for part in ("cep", "sweeps", "pyproject.toml"):  # what the image copies exists
        assert re.search(rf"^COPY .*\b{re.escape(part)}\b", text, re.M) and (ROOT / part).exists()


# ------------------------------------------------------------------ SLURM
def test_shell_scripts_parse():
    scripts = [SBATCH, *CLUSTER.rglob("*.sh")]
    for path in scripts:
        p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert p.returncode == 0, (path, p.stderr)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (bash -n passed)")
    p = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout


def test_sbatch_script_requeues_and_resumes():
    text = SBATCH.read_text()
    header = [ln.split(None, 1)[1] for ln in text.splitlines() if ln.startswith("#SBATCH")]
    for opt in ("--requeue", "--open-mode=append", "--signal=B:USR1@300"):
        assert opt in header
    assert "trap on_usr1 USR1" in text and "trap on_term TERM" in text
    assert 'scontrol requeue "$job"' in text
    assert 'cep-sweep "$sweep_file" --address "$address" --storage "$storage" "$@" &' in text


def _sbatch_code() -> str:
    return "\n".join(ln for ln in re.sub(r"\\\n", " ", SBATCH.read_text()).splitlines()
                     if not ln.lstrip().startswith("#"))


def test_sbatch_steps_get_the_jobs_cpus_and_ray_the_allocated_gpus():
    code = _sbatch_code()
    # since Slurm 22.05 srun does not inherit --cpus-per-task: every `ray start` step asks for them again
    sruns = [ln for ln in code.splitlines() if re.match(r"\s*srun\b", ln) and "ray start" in ln]
    assert len(sruns) == 2 and all('--cpus-per-task="$cpus"' in ln for ln in sruns), sruns
    assert "cpus=${SLURM_CPUS_PER_TASK:-1}" in code
    # Ray is told the CPUs and GPUs of the allocation, not left to detect the whole node's
    assert '--num-cpus="$cpus"' in code and '--num-gpus="$gpus"' in code
    assert "gpus=${CEP_NUM_GPUS:-${SLURM_GPUS_PER_NODE:-0}}" in code


def test_sbatch_ray_ports_are_the_jobs_own():
    """Two jobs on one node: every Ray port of a job lies in its own block derived from the job id."""
    code = _sbatch_code()
    m = re.search(r"port_base=\$\{CEP_RAY_PORT_BASE:-\$\(\((\d+) \+ \(job % (\d+)\) \* (\d+)\)\)\}", code)
    assert m, "port_base derived from the job id"
    first, slots, block = map(int, m.groups())
    assert first >= 20000, "above Ray's default worker ports (10002-19999) that other Ray jobs use"
    assert first + slots * block <= 32768, "below Linux's default ephemeral ports (32768-60999)"
    offsets = {opt: int(off) for opt, off in re.findall(r"(--[a-z-]+-port)=\$\(\(port_base \+ (\d+)\)\)", code)}
    needed = {"--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--runtime-env-agent-port", "--metrics-export-port",
              "--min-worker-port", "--max-worker-port", "--ray-client-server-port"}
    assert set(offsets) == needed, set(offsets) ^ needed
    assert len(set(offsets.values())) == len(offsets) and all(0 < o < block for o in offsets.values())
    assert offsets["--max-worker-port"] - offsets["--min-worker-port"] >= 80  # workers (trials) per node
    assert all(o < offsets["--min-worker-port"] for k, o in offsets.items() if "worker" not in k)
    assert "port=${CEP_RAY_PORT:-$port_base}" in code  # the head's GCS port: the block's first
    assert '"${ray_ports[@]}"' in code and code.index('"${ray_ports[@]}"') < code.index('"${extra_start_args[@]}")')


# ------------------------------------------------------------------ every option is real
SEPARATORS = {"&&", "||", ";", "|", "&", "(", ")"}
ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _logical_lines(text: str) -> list[str]:
    return re.sub(r"\\\n", " ", text).splitlines()


def _tokens(line: str) -> list[str]:
    line = re.sub(r"(?<=[^\s&|;])(;|&&|\|\|)(?=\s|$)", r" \1", line)  # `ulimit -n 65536; ray stop`
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in prose: fall back to words
        return line.split()


def _shell_texts() -> list[tuple[str, str]]:
    """(where, shell text) for every command line of the README and of the cluster files."""
    out = []
    readme = README.read_text()
    fence = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
    for lang, block in fence.findall(readme):
        if lang in ("", "bash", "sh"):
            out += [("README.md", ln) for ln in _logical_lines(block)]
    out += [("README.md (inline)", m) for m in re.findall(r"`([^`\n]+)`", fence.sub("", readme))]
    out += [(SBATCH.name, ln) for ln in _logical_lines(SBATCH.read_text()) if not ln.lstrip().startswith("#")]
    aws = load(AWS)
    for key in ("setup_commands", "head_setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        out += [(f"{AWS.name}:{key}", c) for c in aws.get(key) or []]
    for name in ("raycluster.yaml", "rayjob.yaml", "results-pvc.yaml", "networkpolicy.yaml", "Dockerfile"):
        text = (K8S / name).read_text()
        out += [(name, ln.split("#", 1)[1]) for ln in _logical_lines(text) if "#" in ln]  # commands in comments
    out += [("rayjob.yaml:entrypoint", load(K8S / "rayjob.yaml")["spec"]["entrypoint"])]
    for path in (AWS, SBATCH):
        out += [(path.name, ln.split("#", 1)[1]) for ln in _logical_lines(path.read_text()) if "#" in ln]
    return out


def _click_options(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")} | {"--help", "-h"}


def _commands() -> dict[str, click.Command]:
    """Command name (as typed) -> its click command, for every command whose options we check."""
    from cep.aggregate.cli import aggregate_command
    from cep.cli import cli
    from cep.sweep.cli import sweep_command

    known: dict[str, click.Command] = {"cep-sweep": sweep_command, "cep-sweep aggregate": aggregate_command,
                                       "python -m cep.aggregate.cli": aggregate_command}
    known.update({f"cep {name}": c for name, c in cli.commands.items()})
    try:
        from ray.scripts.scripts import cli as ray_cli
    except ImportError:
        return known
    for name, c in ray_cli.commands.items():
        if isinstance(c, click.Group):
            known.update({f"ray {name} {sub}": s for sub, s in c.commands.items()})
        else:
            known[f"ray {name}"] = c
    return known


def _find_commands(tokens: list[str], known: dict[str, click.Command]) -> list[tuple[str, list[str]]]:
    """Every known command in a token list, with the tokens up to the next shell separator (or `--`)."""
    found = []
    i = 0
    while i < len(tokens):
        name = next((n for n in sorted(known, key=lambda n: -len(n.split()))
                     if tokens[i:i + len(n.split())] == n.split()), None)
        if name is None:
            i += 1
            continue
        j = i + len(name.split())
        args = []
        while j < len(tokens) and tokens[j] not in SEPARATORS and tokens[j] != "--":
            args.append(tokens[j])
            j += 1
        found.append((name, args))
        i = j + (1 if j < len(tokens) and tokens[j] == "--" else 0)  # after `--`: the command it runs
    return found


def test_every_option_in_the_readme_and_the_files_exists():
    known = _commands()
    seen: dict[str, int] = {}
    problems = []
    for where, line in _shell_texts():
        for name, args in _find_commands(_tokens(line), known):
            seen[name] = seen.get(name, 0) + 1
            options = _click_options(known[name])
            for a in args:
                if a.startswith("-") and len(a) > 1 and not a.startswith("-$") and not ENV_ASSIGNMENT.match(a):
                    if a.split("=", 1)[0] not in options:
                        problems.append(f"{where}: `{name}` has no option {a.split('=', 1)[0]} (in: {line.strip()})")
    assert not problems, "\n".join(problems)
    # the parser really read the recipes (not a vacuous pass)
    assert seen.get("cep-sweep", 0) >= 8 and seen.get("cep-sweep aggregate", 0) >= 3, seen
    if "ray start" in known:
        assert seen["ray start"] >= 6 and seen["ray job submit"] >= 3 and seen["ray up"] >= 1, seen


def test_sweep_files_named_in_the_recipes_exist():
    texts = README.read_text() + AWS.read_text() + SBATCH.read_text() + "".join(
        p.read_text() for p in K8S.iterdir() if p.is_file())
    names = set(re.findall(r"sweeps/([\w.-]+\.yaml)", texts))
    assert names and all((ROOT / "sweeps" / n).exists() for n in names), names


# ------------------------------------------------------------------ sweep files: custom resources
SWEEP = {"name": "s", "base": {"epochs": 1, "dataset": "mnist5k"}, "experiments": {"EP": {"rule": "ep"}}}


def test_custom_ray_resources_in_the_sweep_file():
    spec = parse_sweep({**SWEEP, "resources": {"cpu": 2, "gpu": 0.25, "a100": 1, "accelerator_type:A100": 0.001}})
    assert spec.resources == {"cpu": 2.0, "gpu": 0.25, "a100": 1.0, "accelerator_type:A100": 0.001}
    spec = parse_sweep(SWEEP, ["resources.worker_only=1"])
    assert spec.resources == {"cpu": 1.0, "gpu": 0.0, "worker_only": 1.0}
    with pytest.raises(SweepError) as e:
        parse_sweep({**SWEEP, "resources": {"gpus": 1, "GPU": 1, "a100": -1, "two words": 1}})
    assert e.value.problems == [
        "resources.gpus: unknown resource; did you mean gpu?",
        "resources.GPU: unknown resource; did you mean gpu?",
        "resources.a100: got -1; a custom resource per trial is a number >= 0",
        "resources.two words: unknown resource; use cpu (per trial), gpu (fraction per trial) or the name of a "
        "custom Ray resource (letters, digits and _ . : / -)",
    ]
