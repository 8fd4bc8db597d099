"""The example spec printed by ``pgverify sweep --example`` (the README shows it too)."""

EXAMPLE = """\
# A pgverify sweep spec (TOML). Every axis takes one value or a list of values; a list is swept,
# and the grid is every combination. Run it:  pgverify sweep example.toml --out sweep-example
# (24 cells: (2 cispo configs + ppo_clip) x 2 advantages x 2 horizons x 2 seeds; under a minute).

# what each cell measures: bias (exact), variance, zero_weight_frac, ess (Monte Carlo), dynamics
quantities = ["bias", "variance", "zero_weight_frac", "ess"]
seeds = [0, 1]                  # each seed draws its own policy pair and samples
replicas = 400                  # Monte Carlo batches per cell: a multiple of 20, >= 40

# the task: pi_old random with these logits, pi_theta = pi_old moved to the given divergence
policy = "tabular"              # tabular, markov or gru
horizon = [2, 4]                # T, tokens per sequence
vocab = 3                       # V
divergence = "kl"               # kl = KL(pi_old || pi_theta) or chi2 = chi2(pi_theta || pi_old), per token
divergence_value = 0.1

# the estimator: K samples per prompt, advantages per group, aggregation of the objective
group_size = 4                  # K
agg = "seq-mean-token-mean"     # an aggregation of `pgverify list`, or "default" (each objective's own)

[objectives.cispo]              # a registry objective; its config fields, a list is swept
eps_high = [0.2, 4.0]

[objectives.ppo_clip]           # an empty table: the registered defaults

[advantages.grpo]               # a per-group advantage estimator, with its config fields
[advantages.rloo]
"""
