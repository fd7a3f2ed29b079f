"""
Dynamic worker pools: their specifications, the cloud providers behind one interface, and
the provisioner that launches and terminates instances as work waits and goes.
"""
