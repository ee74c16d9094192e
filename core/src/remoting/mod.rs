//! Apache RocketMQ's remoting protocol: commands, codes and the frame codec.

pub mod codes;
pub mod command;
pub mod ext;
pub mod frame;
mod json;
pub mod limits;

pub use command::{FieldError, LanguageCode, RemotingCommand, SerializeType};
pub use ext::ExtFields;
pub use frame::{
    FrameDecoder, FrameError, Refused, decode_frame, decode_frame_counted, encode, encode_header,
    encode_prefix,
};
