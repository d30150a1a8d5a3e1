//! Messages the proxy sends on its own: authentication requests, ParameterStatus,
//! BackendKeyData, ReadyForQuery, NegotiateProtocolVersion; CancelRequest to servers.

use bytes::{BufMut, BytesMut};

use super::frame::{begin, end, put_cstr};

pub fn auth_ok(buf: &mut BytesMut) {
    auth(buf, 0, &[]);
}

pub fn auth_md5(buf: &mut BytesMut, salt: [u8; 4]) {
    auth(buf, 5, &salt);
}

pub fn auth_sasl(buf: &mut BytesMut, mechanisms: &[&str]) {
    let at = begin(buf, b'R');
    buf.put_i32(10);
    for m in mechanisms {
        put_cstr(buf, m.as_bytes());
    }
    buf.put_u8(0);
    end(buf, at);
}

pub fn auth_sasl_continue(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 11, data);
}

pub fn auth_sasl_final(buf: &mut BytesMut, data: &[u8]) {
    auth(buf, 12, data);
}

fn auth(buf: &mut BytesMut, code: i32, data: &[u8]) {
    let at = begin(buf, b'R');
    buf.put_i32(code);
    buf.extend_from_slice(data);
    end(buf, at);
}

pub fn parameter_status(buf: &mut BytesMut, name: &str, value: &str) {
    // A login writes a dozen of these: one capacity check each, not five.
    buf.reserve(7 + name.len() + value.len());
    let at = begin(buf, b'S');
    put_cstr(buf, name.as_bytes());
    put_cstr(buf, value.as_bytes());
    end(buf, at);
}

pub fn backend_key_data(buf: &mut BytesMut, pid: i32, secret: i32) {
    let at = begin(buf, b'K');
    buf.put_i32(pid);
    buf.put_i32(secret);
    end(buf, at);
}

pub fn ready_for_query(buf: &mut BytesMut, status: u8) {
    let at = begin(buf, b'Z');
    buf.put_u8(status);
    end(buf, at);
}

/// Tell a 3.x client (x > 0) that we speak 3.0 and which `_pq_.` options we ignored.
pub fn negotiate_protocol_version(buf: &mut BytesMut, minor: i32, unsupported: &[String]) {
    let at = begin(buf, b'v');
    buf.put_i32(minor);
    buf.put_i32(unsupported.len() as i32);
    for o in unsupported {
        put_cstr(buf, o.as_bytes());
    }
    end(buf, at);
}

/// An untagged CancelRequest packet for a server.
pub fn cancel_request(pid: i32, secret: i32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&16i32.to_be_bytes());
    b[4..8].copy_from_slice(&super::startup::CANCEL_REQUEST_CODE.to_be_bytes());
    b[8..12].copy_from_slice(&pid.to_be_bytes());
    b[12..16].copy_from_slice(&secret.to_be_bytes());
    b
}

/// An untagged SSLRequest packet for a server.
pub fn ssl_request() -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&8i32.to_be_bytes());
    b[4..8].copy_from_slice(&super::startup::SSL_REQUEST_CODE.to_be_bytes());
    b
}

/// RowDescription of text columns (type `text`, OID 25, text format).
pub fn row_description(buf: &mut BytesMut, columns: &[&str]) {
    let at = begin(buf, b'T');
    buf.put_i16(columns.len() as i16);
    for c in columns {
        put_cstr(buf, c.as_bytes());
        buf.put_i32(0); // table OID
        buf.put_i16(0); // column number
        buf.put_i32(25); // text
        buf.put_i16(-1); // variable size
        buf.put_i32(-1); // no modifier
        buf.put_i16(0); // text format
    }
    end(buf, at);
}

/// DataRow of text values (`None` is NULL). Text and binary formats of `text` agree.
pub fn data_row(buf: &mut BytesMut, values: &[Option<String>]) {
    let at = begin(buf, b'D');
    buf.put_i16(values.len() as i16);
    for v in values {
        match v {
            Some(s) => {
                buf.put_i32(s.len() as i32);
                buf.extend_from_slice(s.as_bytes());
            }
            None => buf.put_i32(-1),
        }
    }
    end(buf, at);
}

pub fn command_complete(buf: &mut BytesMut, tag: &str) {
    let at = begin(buf, b'C');
    put_cstr(buf, tag.as_bytes());
    end(buf, at);
}

/// A NoticeResponse with severity NOTICE.
pub fn notice(buf: &mut BytesMut, message: &str) {
    let at = begin(buf, b'N');
    for (tag, val) in [
        (b'S', "NOTICE"),
        (b'V', "NOTICE"),
        (b'C', "00000"),
        (b'M', message),
    ] {
        buf.put_u8(tag);
        buf.extend(val.bytes().filter(|&b| b != 0));
        buf.put_u8(0);
    }
    buf.put_u8(0);
    end(buf, at);
}

/// A message with no body: ParseComplete '1', BindComplete '2', CloseComplete '3',
/// NoData 'n', EmptyQueryResponse 'I', PortalSuspended 's'.
pub fn empty(buf: &mut BytesMut, tag: u8) {
    let at = begin(buf, tag);
    end(buf, at);
}

/// ParameterDescription with no parameters.
pub fn no_parameters(buf: &mut BytesMut) {
    let at = begin(buf, b't');
    buf.put_i16(0);
    end(buf, at);
}
