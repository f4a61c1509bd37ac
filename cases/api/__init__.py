"""The cases REST API, mounted under /api/v1/ by cases.urls: cases with one endpoint
per lifecycle step, their timeline and history; prescriptions with signing.

A case names its patient by pseudonym only, in what it answers and in what it takes
(``POST cases/`` with ``"patient": "PSI-7KQ2-M9XD"``): the pseudonym is the one
patient identifier every party to a case may know.
"""
