"""REST plumbing every app's API uses: authentication, the permission gate as a DRF
permission class and filter backend, pagination, error mapping, history."""
