"""MetaCLIP curation: metadata entries, exact substring matching, and concept balancing.

`metadata` loads entry lists, `builder` makes them from WordNet/Wikipedia dumps, `matching` finds
the entries a text mentions, `balancing` turns global entry counts into keep decisions, and
`passes`/`layout`/`summary` are the pieces `curation.stages.balance` runs on Ray.
"""
