"""The product's front: projects and runs that chain every service, and the run report."""
