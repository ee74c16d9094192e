//! `RemotingCommand`: one request or response of RocketMQ's remoting protocol.

use std::str::FromStr;

use bytes::Bytes;

use super::ext::ExtFields;

/// How the header is serialized (the high byte of the header-length field).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SerializeType {
    Json = 0,
    RocketMq = 1,
}

/// The client's language, as RocketMQ's `LanguageCode` (a name in JSON, a byte in binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LanguageCode {
    Java,
    Cpp,
    Dotnet,
    Python,
    Delphi,
    Erlang,
    Ruby,
    Other,
    Http,
    Go,
    Php,
    Oms,
    Rust,
    NodeJs,
}

const LANGUAGES: [(LanguageCode, &str); 14] = [
    (LanguageCode::Java, "JAVA"),
    (LanguageCode::Cpp, "CPP"),
    (LanguageCode::Dotnet, "DOTNET"),
    (LanguageCode::Python, "PYTHON"),
    (LanguageCode::Delphi, "DELPHI"),
    (LanguageCode::Erlang, "ERLANG"),
    (LanguageCode::Ruby, "RUBY"),
    (LanguageCode::Other, "OTHER"),
    (LanguageCode::Http, "HTTP"),
    (LanguageCode::Go, "GO"),
    (LanguageCode::Php, "PHP"),
    (LanguageCode::Oms, "OMS"),
    (LanguageCode::Rust, "RUST"),
    (LanguageCode::NodeJs, "NODE_JS"),
];

impl LanguageCode {
    pub fn code(self) -> u8 {
        LANGUAGES
            .iter()
            .position(|(l, _)| *l == self)
            .expect("every language is listed") as u8
    }
    pub fn name(self) -> &'static str {
        LANGUAGES[self.code() as usize].1
    }
    /// Unknown codes read as `Other`: a client of a newer SDK must still be served.
    pub fn from_code(code: u8) -> LanguageCode {
        LANGUAGES
            .get(code as usize)
            .map_or(LanguageCode::Other, |(l, _)| *l)
    }
    pub fn from_name(name: &str) -> LanguageCode {
        LANGUAGES
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(name))
            .map_or(LanguageCode::Other, |(l, _)| *l)
    }
}

/// The version every request carries: Apache's `MQVersion.Version.V4_9_8.ordinal()`, what the
/// Java 4.9.8 client sends. Servers branch on it: Apache's name server answers routes with
/// quoted broker-id keys only to clients of V4_9_4 (401) or later.
pub const CURRENT_VERSION: i32 = 409;

/// The name of a `MQVersion.Version` ordinal (`MQVersion.getVersionDesc`): after the 14
/// V3_0_0 pre-releases every version x.y.z has a SNAPSHOT and a release entry, in order
/// (V4_9_4 = 401, V4_9_8 = 409, V5_0_0 = 413).
pub fn version_name(ordinal: i32) -> String {
    if ordinal < 14 {
        return "V3_0_0_SNAPSHOT".into();
    }
    // Past V5_9_9 Java names every version HIGHER_VERSION.
    if ordinal >= 613 {
        return "HIGHER_VERSION".into();
    }
    let k = ordinal - 14;
    let n = k / 2 + 1;
    let snapshot = if k % 2 == 0 { "_SNAPSHOT" } else { "" };
    format!("V{}_{}_{}{snapshot}", 3 + n / 100, n % 100 / 10, n % 10)
}

/// Flag bit 0: this is a response.
pub const FLAG_RESPONSE: i32 = 1;
/// Flag bit 1: a oneway request (no response expected).
pub const FLAG_ONEWAY: i32 = 1 << 1;

/// A request or response. `ext_fields` is sorted so encoding is deterministic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemotingCommand {
    pub code: i32,
    pub language: LanguageCode,
    pub version: i32,
    pub opaque: i32,
    pub flag: i32,
    pub remark: Option<String>,
    pub ext_fields: ExtFields,
    pub serialize_type: SerializeType,
    pub body: Bytes,
}

/// A header field that is missing or does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("missing header field {0}")]
    Missing(&'static str),
    #[error("header field {field} = {value:?} is not a valid {ty}")]
    Invalid {
        field: &'static str,
        value: String,
        ty: &'static str,
    },
}

impl RemotingCommand {
    /// A request with the given code (JSON header, as the Java client sends by default).
    pub fn request(code: i32, opaque: i32) -> RemotingCommand {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: CURRENT_VERSION,
            opaque,
            flag: 0,
            remark: None,
            ext_fields: ExtFields::new(),
            serialize_type: SerializeType::Json,
            body: Bytes::new(),
        }
    }

    /// The response to `request`: same opaque and serialization, response flag set. Replies
    /// say `JAVA` as Apache brokers do: some SDKs reject language names they do not know.
    pub fn response_to(
        request: &RemotingCommand,
        code: i32,
        remark: Option<String>,
    ) -> RemotingCommand {
        RemotingCommand {
            code,
            language: LanguageCode::Java,
            version: request.version,
            opaque: request.opaque,
            flag: FLAG_RESPONSE,
            remark,
            ext_fields: ExtFields::new(),
            serialize_type: request.serialize_type,
            body: Bytes::new(),
        }
    }

    pub fn is_response(&self) -> bool {
        self.flag & FLAG_RESPONSE != 0
    }
    pub fn is_oneway(&self) -> bool {
        self.flag & FLAG_ONEWAY != 0
    }

    /// Sets a header field (any `Display` value; written without an intermediate `String`).
    pub fn with_ext(mut self, key: &str, value: impl std::fmt::Display) -> Self {
        self.ext_fields.insert(key, value);
        self
    }
    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    pub fn ext(&self, key: &str) -> Option<&str> {
        self.ext_fields.get(key)
    }

    /// An optional ext field parsed as `T`.
    pub fn ext_opt<T: FromStr>(&self, key: &'static str) -> Result<Option<T>, FieldError> {
        match self.ext(key) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| FieldError::Invalid {
                field: key,
                value: v.chars().take(64).collect(),
                ty: std::any::type_name::<T>(),
            }),
        }
    }

    /// A required ext field parsed as `T`.
    pub fn ext_req<T: FromStr>(&self, key: &'static str) -> Result<T, FieldError> {
        self.ext_opt(key)?.ok_or(FieldError::Missing(key))
    }

    /// A required boolean ext field (`true`/`false`, any case, as Java's parseBoolean).
    pub fn ext_bool(&self, key: &'static str) -> Result<Option<bool>, FieldError> {
        Ok(self.ext(key).map(|v| v.trim().eq_ignore_ascii_case("true")))
    }
}
