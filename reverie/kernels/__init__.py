"""Fast paths: speed techniques beside the reference maths of `reverie.nn`, each switched by config."""
