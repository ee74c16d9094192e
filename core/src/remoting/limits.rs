//! What one frame may hold. Decoding is linear in the frame's size; these bound what it
//! stores and how deep it recurses, so a hostile header costs a scan and nothing more.
//!
//! A well-framed request that breaks one of these is answered (see
//! [`FrameError::Refused`](super::FrameError::Refused)): the header is still scanned for its
//! code, opaque and flag, but nothing past the limit is kept. Malformed bytes (bad JSON,
//! truncated binary fields, nesting too deep, a number too long) lose the framing's trust
//! and close the connection.

/// Largest frame (Apache's default is 16 MiB too).
pub const MAX_FRAME: usize = 16 << 20;
/// Largest header. A send's properties are at most 32 KiB stored (an i16 length), up to six
/// times that as JSON escapes; real headers are far smaller.
pub const MAX_HEADER_BYTES: usize = 256 << 10;
/// Most extFields entries in one header, duplicates included (a send has about 15).
pub const MAX_EXT_FIELDS: usize = 1024;
/// Longest extFields key, in bytes once unescaped.
pub const MAX_EXT_KEY_LEN: usize = 1024;
/// Longest extFields value, in bytes once unescaped.
pub const MAX_EXT_VALUE_LEN: usize = 128 << 10;
/// Longest remark kept; a longer one (a stack trace from a peer) is cut at this length.
pub const MAX_REMARK_LEN: usize = 64 << 10;
/// Deepest JSON nesting in a header (values nobody reads are skipped, boundedly).
pub const MAX_JSON_DEPTH: usize = 32;
/// Longest JSON number: longer ones are no i32 or i64 a header can hold.
pub const MAX_NUMBER_LEN: usize = 64;
