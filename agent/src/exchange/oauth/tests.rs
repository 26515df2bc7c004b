//! Tests of the OAuth client: discovery (OpenID, then RFC 8414) and token answers.

mod discovery {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::super::*;

    /// A loopback server answering fixed JSON per path (404 otherwise);
    /// returns the issuer URL and the paths asked for.
    async fn serve(docs: Vec<(&'static str, String)>) -> (Url, Arc<Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", l.local_addr().expect("addr"));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let seen = asked.clone();
        let docs: Vec<(&str, String)> = docs
            .into_iter()
            .map(|(p, d)| (p, d.replace("{base}", &base)))
            .collect();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req);
                let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
                seen.lock().expect("lock").push(path.clone());
                let (status, body) = match docs.iter().find(|(p, _)| *p == path) {
                    Some((_, d)) => ("200 OK", d.clone()),
                    None => ("404 Not Found", "{}".to_owned()),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        (Url::parse(&base).expect("url"), asked)
    }

    fn openid_doc(issuer: &str) -> String {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": "{base}/auth",
            "token_endpoint": "{base}/token",
            "revocation_endpoint": "{base}/revoke",
            "jwks_uri": "{base}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })
        .to_string()
    }

    async fn mix_up_refusal(issuer: &Url) -> String {
        let http = HttpClient::new(
            None,
            &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
        )
        .expect("client");
        let e = discover(&http, issuer).await.err();
        e.expect("a mix-up is refused").to_string()
    }

    const PLAIN: &str = r#"{"issuer":"{base}","token_endpoint":"{base}/token"}"#;
    const OIDC: &str = "/.well-known/openid-configuration";
    const RFC8414: &str = "/.well-known/oauth-authorization-server";

    #[tokio::test]
    async fn an_openid_provider_is_discovered_with_the_login_discovery() {
        let (issuer, asked) = serve(vec![
            (OIDC, openid_doc("{base}")),
            ("/jwks", r#"{"keys":[]}"#.to_owned()),
        ])
        .await;
        let http = HttpClient::new(
            None,
            &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
        )
        .expect("client");
        let m = discover(&http, &issuer).await.expect("discovered");
        let base = issuer.as_str().trim_end_matches('/');
        assert_eq!(
            m.token_endpoint.expect("token").as_str(),
            format!("{base}/token")
        );
        assert_eq!(
            m.revocation_endpoint.expect("revoke").as_str(),
            format!("{base}/revoke")
        );
        assert!(!asked.lock().expect("lock").iter().any(|p| p == RFC8414));
    }

    #[tokio::test]
    async fn a_plain_oauth_server_falls_back_to_rfc8414() {
        let (issuer, asked) = serve(vec![(RFC8414, PLAIN.to_owned())]).await;
        let http = HttpClient::new(
            None,
            &std::sync::Arc::new(crate::outbound::UpstreamProxy::none()),
        )
        .expect("client");
        let m = discover(&http, &issuer).await.expect("discovered");
        assert!(m
            .token_endpoint
            .expect("token")
            .as_str()
            .ends_with("/token"));
        assert!(m.revocation_endpoint.is_none());
        assert_eq!(*asked.lock().expect("lock"), [OIDC, RFC8414]);
    }

    #[tokio::test]
    async fn a_document_for_another_issuer_is_refused_not_skipped() {
        let (issuer, asked) = serve(vec![
            (OIDC, openid_doc("https://evil.example")),
            (RFC8414, PLAIN.to_owned()),
        ])
        .await;
        let e = mix_up_refusal(&issuer).await;
        assert!(e.contains("https://evil.example"), "{e}");
        assert!(!asked.lock().expect("lock").iter().any(|p| p == RFC8414));
    }

    #[tokio::test]
    async fn rfc8414_checks_the_issuer_too() {
        let (issuer, _) = serve(vec![(
            RFC8414,
            r#"{"issuer":"https://evil.example","token_endpoint":"{base}/token"}"#.to_owned(),
        )])
        .await;
        let e = mix_up_refusal(&issuer).await;
        assert!(e.contains("not the configured"), "{e}");
    }
}

mod answers {
    use super::super::*;

    const CANARY: &str = "canary-access-token-0123456789";

    fn oauth() -> OAuth {
        OAuth {
            grant: Grant::ClientAssertion,
            token_url: Url::parse("https://sts.test/token").expect("url"),
            revocation_url: None,
            audience: Vec::new(),
            resource: Vec::new(),
            scope: None,
            default_lifetime: Duration::from_secs(60),
            client: Client::None { client_id: None },
        }
    }

    #[test]
    fn answers_are_read_into_a_credential_and_errors_never_show_it() {
        let ok = oauth()
            .parse(
                http::StatusCode::OK,
                format!(r#"{{"access_token":"{CANARY}","expires_in":"30"}}"#).as_bytes(),
            )
            .expect("issued");
        assert_eq!(ok.value.expose(), CANARY);
        assert_eq!(ok.lifetime, Some(Duration::from_secs(30)));
        assert!(!format!("{ok:?}").contains(CANARY), "{ok:?}");
        for (body, problem) in [
            (
                format!(r#"{{"access_token":"{CANARY}","token_type":"mac"}}"#),
                "token_type \"mac\"",
            ),
            (
                format!(r#"{{"access_token":"{CANARY}","access_token":"x"}}"#),
                "an object that repeats a field",
            ),
            (
                format!(r#"{{"access_token":"{CANARY}""#),
                "a body that is not JSON",
            ),
            (format!(r#"["{CANARY}","Bearer",60]"#), "no access_token"),
            (
                format!(r#"{{"access_token":["{CANARY}"]}}"#),
                "no access_token",
            ),
            (
                format!(r#"{{"access_token":"{CANARY}","expires_in":0}}"#),
                "expires_in 0",
            ),
        ] {
            let e = oauth()
                .parse(http::StatusCode::OK, body.as_bytes())
                .expect_err("refused");
            let (shown, debug) = (e.to_string(), format!("{e:?}"));
            assert!(shown.contains(problem), "{shown}");
            assert!(
                !shown.contains(CANARY) && !debug.contains(CANARY),
                "{debug}"
            );
        }
    }
}
