"""Words the synthetic benchmark texts are drawn from (shared by the bench scripts)."""

WORDS = (  # noqa: SIM905 (one readable sentence)
    "we went to the lake last weekend and my sister brought her dog because she loves "
    "hiking early in the morning before work I started painting again after the course "
    "in May my kids were excited about the camping trip with friends from school the "
    "new job is stressful but the team supports me a lot when deadlines come close"
).split()
