"""The vault: the repository format (packs, index, manifests, keys, locks), verify, prune and the storage
backends. It knows nothing of what it stores: no VMs, no databases, no plugins."""
