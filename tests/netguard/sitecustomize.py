"""Installs the network guard in every Python process started with this folder on PYTHONPATH."""

import os

if os.environ.get("COURSE_NETGUARD_LOG"):
    import course_netguard

    course_netguard.install(os.environ["COURSE_NETGUARD_LOG"])
