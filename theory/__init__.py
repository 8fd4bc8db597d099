"""pgverify theory: sympy derivations of each objective's gradient weight and the closed forms
the claims need. The derivations arrive with the theory issue; this package is their home."""
