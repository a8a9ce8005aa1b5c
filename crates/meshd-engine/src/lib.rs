//! Linux I/O for the meshd node.
