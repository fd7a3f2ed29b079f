"""`debusine-admin`: Django's manage.py for this project, with noun + verb commands."""
