//! Apache RocketMQ's remoting protocol: commands, codes and the frame codec.

pub mod codes;
pub mod command;
pub mod ext;
pub mod frame;
mod json;

pub use command::{FieldError, LanguageCode, RemotingCommand, SerializeType};
pub use ext::ExtFields;
pub use frame::{FrameDecoder, FrameError, decode_frame, encode, encode_header, encode_prefix};
