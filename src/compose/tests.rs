//! Loading whole compose files: forms, normalization, and errors located at their line.
