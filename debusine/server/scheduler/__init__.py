"""
The scheduler: matching pending work requests to idle workers, the triggers that ask for a
pass, worker notifications, leases, and the Celery jobs that run them (`jobs.py`).
"""
