//! A client that speaks the protocol by hand: for pipelines no driver sends.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Env;

/// A protocol message: tag, length, body.
pub fn raw(tag: u8, body: &[&[u8]]) -> Vec<u8> {
    let body = body.concat();
    [
        vec![tag],
        ((body.len() + 4) as i32).to_be_bytes().to_vec(),
        body,
    ]
    .concat()
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    raw(b'Q', &[sql.as_bytes(), b"\0"])
}

/// Connected and logged in as `user` to the test database (the proxy must trust it).
pub async fn login(env: &Env, user: &str) -> TcpStream {
    let mut s = TcpStream::connect(env.addr()).await.unwrap();
    let mut startup = 196_608i32.to_be_bytes().to_vec();
    startup.extend_from_slice(format!("user\0{user}\0database\0{}\0\0", env.db.db).as_bytes());
    let startup = [((startup.len() + 4) as i32).to_be_bytes().to_vec(), startup].concat();
    assert_eq!(raw_round(&mut s, &[startup], 1).await, Vec::<String>::new());
    s
}

/// What a raw-protocol client gets back: each ErrorResponse's SQLSTATE in order, read
/// until the `n`th ReadyForQuery.
pub async fn raw_round(s: &mut TcpStream, send: &[Vec<u8>], n: usize) -> Vec<String> {
    s.write_all(&send.concat()).await.unwrap();
    read_codes(s, Some(n)).await
}

/// As [`raw_round`], read until the proxy closes the connection.
pub async fn raw_to_end(s: &mut TcpStream, send: &[Vec<u8>]) -> Vec<String> {
    s.write_all(&send.concat()).await.unwrap();
    read_codes(s, None).await
}

async fn read_codes(s: &mut TcpStream, n: Option<usize>) -> Vec<String> {
    let (mut buf, mut codes, mut ready) = (Vec::new(), Vec::new(), 0);
    while n.is_none_or(|n| ready < n) {
        let mut chunk = [0u8; 8192];
        let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        if got == 0 {
            assert!(
                n.is_none(),
                "the proxy closed the connection; codes so far {codes:?}"
            );
            break;
        }
        buf.extend_from_slice(&chunk[..got]);
        while buf.len() >= 5 {
            let len = i32::from_be_bytes(buf[1..5].try_into().unwrap()) as usize;
            if buf.len() < 1 + len {
                break;
            }
            let msg: Vec<u8> = buf.drain(..1 + len).collect();
            match msg[0] {
                b'Z' => ready += 1,
                b'E' => {
                    let fields = &msg[5..];
                    let c = fields
                        .split(|&b| b == 0)
                        .find(|f| f.first() == Some(&b'C'))
                        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned());
                    codes.push(c.unwrap_or_default());
                }
                _ => {}
            }
        }
    }
    codes
}
