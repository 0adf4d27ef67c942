"""nextbest's pure decisioning core: profiles, rules, features, arbitration, models.

No Ray and no HTTP here (a unit test enforces it): this is the one place where features
are computed, so serving and training can never disagree.
"""
