"""`nextbest bench`: figures as ratios against a bare Ray Serve floor from the same run."""
