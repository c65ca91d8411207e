//! Customers: identity, bearer tokens (stored only as SHA-256 hashes) and wallets.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{ServiceError, Stores};
use crate::{
    domain::money::MAX_BALANCE_MINOR,
    store::{
        is_unique_violation,
        postgres::customers::{self, CustomerRow, NewCustomer},
    },
};

/// Customer tokens start with this, so a leaked one is easy to recognise and scan for.
pub const TOKEN_PREFIX: &str = "oc_";

#[derive(Clone)]
pub struct Customers {
    stores: Stores,
    currency: String,
}

impl Customers {
    pub fn new(stores: Stores, currency: String) -> Self {
        Self { stores, currency }
    }

    /// Creates a customer; returns it with its token, which is never shown again.
    pub async fn create(
        &self,
        name: &str,
        email: &str,
        balance_minor: i64,
    ) -> Result<(CustomerRow, String), ServiceError> {
        let (token, token_hash) = new_token();
        let mut tx = self.stores.pg.begin().await?;
        let new = NewCustomer {
            id: Uuid::now_v7(),
            name,
            email,
            balance_minor,
            currency: &self.currency,
            token_hash: &token_hash,
        };
        let customer = customers::insert(&mut tx, new).await.map_err(|e| {
            if is_unique_violation(&e, customers::EMAIL_CONSTRAINT) {
                ServiceError::Conflict(format!("a customer with email {email} already exists"))
            } else {
                e.into()
            }
        })?;
        if balance_minor > 0 {
            customers::record_deposit(&mut tx, customer.id, balance_minor).await?;
        }
        tx.commit().await?;
        Ok((customer, token))
    }

    pub async fn get(&self, id: Uuid) -> Result<CustomerRow, ServiceError> {
        customers::find(&self.stores.pg, id)
            .await?
            .ok_or(ServiceError::NotFound("customer"))
    }

    pub async fn find_by_email(&self, email: &str) -> Result<Option<CustomerRow>, ServiceError> {
        Ok(customers::find_by_email(&self.stores.pg, email).await?)
    }

    /// Credits the wallet and records the deposit, atomically.
    pub async fn deposit(&self, id: Uuid, amount_minor: i64) -> Result<CustomerRow, ServiceError> {
        let mut tx = self.stores.pg.begin().await?;
        let Some(customer) =
            customers::credit(&mut tx, id, amount_minor, MAX_BALANCE_MINOR).await?
        else {
            // Either there is no such customer or the balance would pass the cap. Release the
            // transaction's connection before asking which.
            tx.rollback().await?;
            self.get(id).await?;
            return Err(ServiceError::invalid(
                "amount_minor",
                format!("the balance may not exceed {MAX_BALANCE_MINOR} minor units"),
            ));
        };
        customers::record_deposit(&mut tx, id, amount_minor).await?;
        tx.commit().await?;
        Ok(customer)
    }

    /// Issues a new token for the customer, replacing the old one (used by the demo seed).
    pub async fn rotate_token(&self, id: Uuid) -> Result<String, ServiceError> {
        let (token, token_hash) = new_token();
        customers::replace_token_hash(&self.stores.pg, id, &token_hash).await?;
        Ok(token)
    }

    /// The customer a bearer token belongs to, if any.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Uuid>, ServiceError> {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        Ok(customers::id_by_token_hash(&self.stores.pg, &hash_token(token)).await?)
    }
}

/// 256 random bits: high entropy, so a fast hash (not a password KDF) is the right choice.
fn new_token() -> (String, Vec<u8>) {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_token(&token);
    (token, hash)
}

fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_stably() {
        let (a, hash_a) = new_token();
        let (b, _) = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_token(&a), hash_a);
    }
}
