//! The seed's echo server: bytes back unchanged, over TCP and UDP, many clients at once.

mod support;

use std::time::Duration;

use support::{TIMEOUT, start_echo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[tokio::test]
async fn echoes_one_mebibyte_of_binary_exactly() {
    let server = start_echo().await;
    let payload: Vec<u8> = (0..1024 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let stream = TcpStream::connect(server.tcp()).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    let sent = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::with_capacity(payload.len());
    tokio::time::timeout(TIMEOUT, r.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    assert_eq!(got.len(), payload.len());
    assert!(got == payload, "echo differs");
}

#[tokio::test]
async fn fifty_clients_echo_concurrently() {
    let server = start_echo().await;
    let addr = server.tcp();
    let mut tasks = Vec::new();
    for i in 0..50u32 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            for round in 0..20u32 {
                let msg = format!("client {i} round {round}\n");
                s.write_all(msg.as_bytes()).await.unwrap();
                let mut back = vec![0u8; msg.len()];
                s.read_exact(&mut back).await.unwrap();
                assert_eq!(back, msg.as_bytes());
            }
        }));
    }
    for t in tasks {
        tokio::time::timeout(TIMEOUT, t).await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn udp_datagrams_come_back_unchanged() {
    let server = start_echo().await;
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.connect(server.udp()).await.unwrap();
    for payload in [&b"hello"[..], &[0u8, 255, 10, 13], &[7u8; 8000]] {
        socket.send(payload).await.unwrap();
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&buf[..n], payload);
    }
}
