//! The router: source-IP routing of connections to mail nodes, the cluster directory and the admin API.
