"""Near-duplicate and eval-contamination search at pool scale (the `neardup` stage's passes).

rows.py: keep keys, cluster ids, row files; evalset.py: the eval index and its query;
kmeans.py: centroids on a bounded sample; partition.py: rows → cluster-bucket files;
pairs.py: pairs and groups inside clusters, sha256 copies; groups.py: groups merged across
passes by label propagation; plan.py: the driver's plan of the passes (centroids, regroups,
splits, packs); exact.py: the all-in-one reference method.
"""
