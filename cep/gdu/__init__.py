"""EP updates versus BPTT gradients (spec section 6): the analysis (autograd) and its results folder."""
