"""Neural models shared by training and serving (two-tower retrieval, ranker)."""
