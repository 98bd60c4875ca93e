//! Reading `WWW-Authenticate` challenges (RFC 9110 §11.6.1) as registries
//! send them: `Bearer realm="…",service="…",scope="…"` and `Basic realm=…`,
//! quoted values that contain commas, and several challenges in one header
//! or in several headers. Pure; the exchange decides what to do with them.

/// One challenge: the scheme (lower-cased) and its parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub(crate) scheme: String,
    pub(crate) params: Vec<(String, String)>,
}

impl Challenge {
    /// A parameter's value; parameter names are case-insensitive.
    pub(crate) fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// How a registry wants to be authenticated, from its challenges.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AuthScheme {
    /// HTTP Basic with the username and password.
    Basic,
    /// The token flow: ask `realm` for a token for `service` and a scope.
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The scheme to use among `challenges`: Bearer (with a realm) over Basic,
/// as Docker does; `None` when neither is offered.
pub(crate) fn preferred_scheme(challenges: &[Challenge]) -> Option<AuthScheme> {
    let bearer = challenges.iter().find_map(|challenge| {
        if challenge.scheme != "bearer" {
            return None;
        }
        let realm = challenge.param("realm")?.trim();
        if realm.is_empty() {
            return None;
        }
        Some(AuthScheme::Bearer {
            realm: realm.to_owned(),
            service: challenge
                .param("service")
                .filter(|service| !service.is_empty())
                .map(str::to_owned),
        })
    });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|challenge| challenge.scheme == "basic")
            .then_some(AuthScheme::Basic)
    })
}

/// Parses every challenge of every `WWW-Authenticate` header value given.
pub(crate) fn parse_challenges<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Challenge> {
    values.into_iter().flat_map(parse_header).collect()
}

fn parse_header(header: &str) -> Vec<Challenge> {
    let mut cursor = Cursor {
        chars: header.chars().collect(),
        at: 0,
    };
    let mut challenges = Vec::new();
    loop {
        cursor.skip(|c| c.is_whitespace() || c == ',');
        let scheme = cursor.token();
        if scheme.is_empty() {
            // Garbage or the end: nothing more to read.
            break;
        }
        let mut challenge = Challenge {
            scheme: scheme.to_ascii_lowercase(),
            params: Vec::new(),
        };
        loop {
            cursor.skip(|c| c.is_whitespace() || c == ',');
            let start = cursor.at;
            let name = cursor.token();
            cursor.skip(char::is_whitespace);
            if name.is_empty() || !cursor.eat('=') {
                // Not `name=`: the next challenge's scheme (or a token68,
                // which no registry scheme uses); read it as a scheme.
                cursor.at = start;
                break;
            }
            cursor.skip(char::is_whitespace);
            let value = if cursor.eat('"') {
                cursor.quoted()
            } else {
                cursor.token()
            };
            challenge.params.push((name, value));
        }
        challenges.push(challenge);
    }
    challenges
}

struct Cursor {
    chars: Vec<char>,
    at: usize,
}

impl Cursor {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn eat(&mut self, expected: char) -> bool {
        if self.peek() == Some(expected) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn skip(&mut self, skip: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&skip) {
            self.at += 1;
        }
    }

    /// A run of token characters (anything but separators used here).
    fn token(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            if c.is_whitespace() || c == ',' || c == '=' || c == '"' {
                break;
            }
            out.push(c);
            self.at += 1;
        }
        out
    }

    /// The rest of a quoted string (the opening quote already eaten), with
    /// backslash escapes resolved; an unterminated one ends at the end.
    fn quoted(&mut self) -> String {
        let mut out = String::new();
        while let Some(c) = self.peek() {
            self.at += 1;
            match c {
                '"' => break,
                '\\' => {
                    if let Some(escaped) = self.peek() {
                        out.push(escaped);
                        self.at += 1;
                    }
                }
                other => out.push(other),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(header: &str) -> Vec<Challenge> {
        parse_challenges([header])
    }

    #[test]
    fn bearer_with_quoted_values_and_commas_in_the_scope() {
        let challenges = one(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull,push""#,
        );
        assert_eq!(challenges.len(), 1);
        let bearer = &challenges[0];
        assert_eq!(bearer.scheme, "bearer");
        assert_eq!(bearer.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(bearer.param("SERVICE"), Some("registry.docker.io"));
        assert_eq!(
            bearer.param("scope"),
            Some("repository:library/nginx:pull,push")
        );
        assert_eq!(
            preferred_scheme(&challenges),
            Some(AuthScheme::Bearer {
                realm: "https://auth.docker.io/token".to_owned(),
                service: Some("registry.docker.io".to_owned()),
            })
        );
    }

    #[test]
    fn basic_with_unquoted_and_quoted_realms() {
        for header in [
            "Basic realm=berth-dev",
            r#"basic realm="Registry Realm""#,
            "Basic",
        ] {
            let challenges = one(header);
            assert_eq!(challenges.len(), 1, "{header}");
            assert_eq!(challenges[0].scheme, "basic");
            assert_eq!(preferred_scheme(&challenges), Some(AuthScheme::Basic));
        }
        assert_eq!(
            one("Basic realm=berth-dev")[0].param("realm"),
            Some("berth-dev")
        );
    }

    #[test]
    fn several_challenges_in_one_header_and_in_several() {
        let challenges = one(
            r#"Basic realm="a, b", Bearer realm="https://t.example/token", service=svc , error="insufficient_scope""#,
        );
        assert_eq!(challenges.len(), 2);
        assert_eq!(challenges[0].param("realm"), Some("a, b"));
        assert_eq!(challenges[1].param("service"), Some("svc"));
        assert_eq!(challenges[1].param("error"), Some("insufficient_scope"));
        // Bearer wins over Basic whatever the order.
        assert!(matches!(
            preferred_scheme(&challenges),
            Some(AuthScheme::Bearer { .. })
        ));

        let split =
            parse_challenges(["Basic realm=x", r#"Bearer realm="https://t.example/token""#]);
        assert_eq!(split.len(), 2);
        assert_eq!(
            preferred_scheme(&split),
            Some(AuthScheme::Bearer {
                realm: "https://t.example/token".to_owned(),
                service: None,
            })
        );
    }

    #[test]
    fn escapes_and_odd_input() {
        let challenges = one(r#"Bearer realm="https://t.example/to\"ken\\""#);
        assert_eq!(
            challenges[0].param("realm"),
            Some(r#"https://t.example/to"ken\"#)
        );
        assert!(one("").is_empty());
        assert!(one(" , ,").is_empty());
        // Unterminated quote: the value runs to the end.
        assert_eq!(one(r#"Bearer realm="open"#)[0].param("realm"), Some("open"));
        // A Bearer challenge without a realm is of no use.
        assert_eq!(preferred_scheme(&one("Bearer service=x")), None);
        assert_eq!(preferred_scheme(&one("Negotiate abc==")), None);
    }
}
