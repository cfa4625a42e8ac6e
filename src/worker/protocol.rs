//! What the server and its parser child say to each other: one JSON line
//! per request on the child's stdin, one JSON line per answer on its stdout.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ingest::ParseError;
use crate::types::ChunkText;

#[derive(Debug, Serialize, Deserialize)]
pub struct ParseRequest {
    pub path: PathBuf,
    pub kind: String,
    /// The attempt number (test hooks use it to fail only early attempts).
    pub attempt: i64,
    pub max_text_bytes: usize,
    pub chunk_size: usize,
    pub chunk_overlap: usize,
}

#[derive(Debug, Serialize, Deserialize)]
pub enum ParseResponse {
    Chunks(Vec<ChunkText>),
    Failed(ParseError),
}
