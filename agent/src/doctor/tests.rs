use super::*;

// Regression: doctor said "an earlier route wins" while the proxy's
// matcher picks the longest prefix; doctor must give the proxy's verdict.
#[test]
fn explain_url_gives_the_proxys_verdict() {
    let cfg = Config::parse(
        std::path::Path::new("t.toml"),
        "[[credential]]\nname = \"a\"\nexchange = \"passthrough\"\n[[credential]]\nname = \"b\"\nexchange = \"passthrough\"\n[[route]]\nurl = \"https://api.example.com/v1/\"\ncredential = \"a\"\n[[route]]\nurl = \"https://api.example.com/v1/admin/\"\ncredential = \"b\"\nmethods = [\"GET\"]\n",
    )
    .expect("config");
    let mut out = String::new();
    explain_url(
        &cfg,
        "https://api.example.com/v1/admin/users",
        "GET",
        None,
        &mut out,
    );
    assert!(
        out.contains("matches https://api.example.com/v1/admin/ → credential b"),
        "{out}"
    );
    let mut out = String::new();
    explain_url(
        &cfg,
        "https://api.example.com/v1/admin/users",
        "POST",
        None,
        &mut out,
    );
    assert!(
        out.contains("refused with 403: method POST is not allowed"),
        "{out}"
    );
    let mut out = String::new();
    explain_url(&cfg, "https://api.example.com/v2/x", "GET", None, &mut out);
    assert!(
        out.contains("refused with 403: path /v2/x is outside the routes"),
        "{out}"
    );
}
