//! The client an OAuth exchange authenticates as, its secret read from the
//! variable the config names.

use super::*;

/// Builds the client, reading the secret from its variable.
pub(super) fn resolve_client(
    name: &str,
    c: &ClientAuth,
    env: &dyn Env,
) -> Result<Client, ExchangeError> {
    let secret = |var: &str| {
        env.non_empty(var)
            .map(Secret::new)
            .ok_or_else(|| ExchangeError::MissingSecret {
                name: name.to_owned(),
                variable: var.to_owned(),
            })
    };
    Ok(match c {
        ClientAuth::None { client_id } => Client::None {
            client_id: client_id.clone(),
        },
        ClientAuth::Basic {
            client_id,
            secret_env,
        } => Client::Basic {
            client_id: client_id.clone(),
            secret: secret(secret_env)?,
        },
        ClientAuth::Post {
            client_id,
            secret_env,
        } => Client::Post {
            client_id: client_id.clone(),
            secret: secret(secret_env)?,
        },
    })
}
