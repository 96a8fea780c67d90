//! Node registry: register_node, heartbeat, node_status, remove_node, set_local_node,
//! local_node_id. Plain SQL (SECURITY INVOKER): callers need the documented table privileges.

pgrx::extension_sql_file!("../sql/nodes.sql", name = "nodes", requires = ["tables"]);
