"""pgverify policies: synthetic autoregressive policies (tabular, Markov, tiny neural) whose
expectations can be enumerated exactly. The policies arrive with the engines issue."""
