//! The payments rules, pure: what a charge or a refund does to an order's payment and a wallet,
//! decided for a whole batch of commands in memory and written back at once.
//!
//! An order has at most one payment, and its first command decides it: a charge that finds
//! the money moves it (`charged`), one that does not is `declined`; a refund that comes first
//! leaves a `voided` tombstone, so the charge that arrives after it is refused and no money
//! moves. A later command only reads what was decided: a second charge answers as the first
//! did; a refund gives a charge back once (`refunded`) and is a no-op otherwise. No wallet goes
//! below zero.

use std::collections::HashMap;

use uuid::Uuid;

use super::{order::OrderReason, saga::Reply};

/// What became of an order's payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    Charged,
    Declined,
    /// A refund found nothing to give back: any later charge is refused.
    Voided,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charged => "charged",
            Self::Declined => "declined",
            Self::Voided => "voided",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "charged" => Some(Self::Charged),
            "declined" => Some(Self::Declined),
            "voided" => Some(Self::Voided),
            "refunded" => Some(Self::Refunded),
            _ => None,
        }
    }
}

/// An order's payment: its status and the amount it was for (0 for a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub customer_id: Uuid,
    pub status: PaymentStatus,
    pub amount_minor: i64,
}

/// A command to the payments role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instruction {
    Charge {
        order_id: Uuid,
        customer_id: Uuid,
        amount_minor: i64,
    },
    Refund {
        order_id: Uuid,
        customer_id: Uuid,
    },
}

/// The customer has no wallet: the command can never succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no customer {0}")]
pub struct NoWallet(pub Uuid);

/// The payments and wallets a batch touches, as read (locked) before it and as it leaves them.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    payments: HashMap<Uuid, Payment>,
    balances: HashMap<Uuid, i64>,
    /// Orders whose payment the batch created (the rest were read).
    created: Vec<Uuid>,
    /// Orders whose existing payment the batch changed.
    changed: Vec<Uuid>,
    /// Wallets the batch moved.
    moved: Vec<Uuid>,
}

impl Ledger {
    /// The ledger before the batch: the payments that exist for its orders, and the balances of
    /// its customers' wallets.
    pub fn new(payments: HashMap<Uuid, Payment>, balances: HashMap<Uuid, i64>) -> Self {
        Self {
            payments,
            balances,
            ..Self::default()
        }
    }

    /// Applies one command; returns the reply for it.
    pub fn apply(&mut self, instruction: Instruction) -> Result<Reply, NoWallet> {
        let declined = Reply::PaymentDeclined {
            reason: OrderReason::InsufficientFunds,
        };
        match instruction {
            Instruction::Charge {
                order_id,
                customer_id,
                amount_minor,
            } => {
                if let Some(payment) = self.payments.get(&order_id) {
                    return Ok(match payment.status {
                        PaymentStatus::Charged => Reply::PaymentCharged,
                        _ => declined,
                    });
                }
                let balance = *self
                    .balances
                    .get(&customer_id)
                    .ok_or(NoWallet(customer_id))?;
                let status = if balance >= amount_minor {
                    self.move_wallet(customer_id, -amount_minor);
                    PaymentStatus::Charged
                } else {
                    PaymentStatus::Declined
                };
                self.create(order_id, customer_id, status, amount_minor);
                Ok(match status {
                    PaymentStatus::Charged => Reply::PaymentCharged,
                    _ => declined,
                })
            }
            Instruction::Refund {
                order_id,
                customer_id,
            } => {
                match self.payments.get(&order_id).copied() {
                    None => {
                        if !self.balances.contains_key(&customer_id) {
                            return Err(NoWallet(customer_id));
                        }
                        self.create(order_id, customer_id, PaymentStatus::Voided, 0);
                    }
                    Some(payment) if payment.status == PaymentStatus::Charged => {
                        if !self.balances.contains_key(&payment.customer_id) {
                            return Err(NoWallet(payment.customer_id));
                        }
                        self.move_wallet(payment.customer_id, payment.amount_minor);
                        self.payments.insert(
                            order_id,
                            Payment {
                                status: PaymentStatus::Refunded,
                                ..payment
                            },
                        );
                        if !self.created.contains(&order_id) && !self.changed.contains(&order_id) {
                            self.changed.push(order_id);
                        }
                    }
                    // Declined, voided or refunded already: nothing to give back.
                    Some(_) => {}
                }
                Ok(Reply::PaymentRefunded)
            }
        }
    }

    fn create(&mut self, order_id: Uuid, customer_id: Uuid, status: PaymentStatus, amount: i64) {
        self.payments.insert(
            order_id,
            Payment {
                customer_id,
                status,
                amount_minor: amount,
            },
        );
        self.created.push(order_id);
    }

    fn move_wallet(&mut self, customer_id: Uuid, delta: i64) {
        let balance = self.balances.entry(customer_id).or_default();
        *balance += delta;
        debug_assert!(*balance >= 0, "a wallet below zero");
        if !self.moved.contains(&customer_id) {
            self.moved.push(customer_id);
        }
    }

    /// Payments the batch created, as they stand after it: `(order, payment)`.
    pub fn created(&self) -> Vec<(Uuid, Payment)> {
        self.created
            .iter()
            .map(|id| (*id, self.payments[id]))
            .collect()
    }

    /// Existing payments the batch changed, with their new status.
    pub fn changed(&self) -> Vec<(Uuid, PaymentStatus)> {
        self.changed
            .iter()
            .map(|id| (*id, self.payments[id].status))
            .collect()
    }

    /// Wallets the batch moved, with their balance after it.
    pub fn balances(&self) -> Vec<(Uuid, i64)> {
        self.moved
            .iter()
            .map(|id| (*id, self.balances[id]))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const CUSTOMERS: u128 = 3;
    const ORDERS: u128 = 5;

    fn instruction() -> impl Strategy<Value = Instruction> {
        (0..ORDERS, any::<bool>(), 0..1_500i64).prop_map(|(order, charge, amount)| {
            let order_id = Uuid::from_u128(100 + order);
            // An order always belongs to the same customer.
            let customer_id = Uuid::from_u128(order % CUSTOMERS);
            if charge {
                Instruction::Charge {
                    order_id,
                    customer_id,
                    amount_minor: 100 + amount + order as i64,
                }
            } else {
                Instruction::Refund {
                    order_id,
                    customer_id,
                }
            }
        })
    }

    fn wallets(balance: i64) -> HashMap<Uuid, i64> {
        (0..CUSTOMERS)
            .map(|c| (Uuid::from_u128(c), balance))
            .collect()
    }

    /// Writes a ledger's changes into the state it was built from, as the store does.
    fn write_back(
        ledger: &Ledger,
        payments: &mut HashMap<Uuid, Payment>,
        balances: &mut HashMap<Uuid, i64>,
    ) {
        for (order, payment) in ledger.created() {
            assert!(payments.insert(order, payment).is_none(), "created twice");
        }
        for (order, status) in ledger.changed() {
            payments
                .get_mut(&order)
                .expect("changed an existing one")
                .status = status;
        }
        for (customer, balance) in ledger.balances() {
            balances.insert(customer, balance);
        }
    }

    proptest! {
        /// A batch decides exactly as its commands would one after another, each in a
        /// transaction of its own; money is conserved and no wallet goes below zero.
        #[test]
        fn a_batch_decides_as_its_commands_one_by_one(
            opening in 0..3_000i64,
            commands in prop::collection::vec(instruction(), 1..40),
            split in 0..40usize,
        ) {
            let (mut payments, mut balances) = (HashMap::new(), wallets(opening));
            let mut one_by_one = Vec::new();
            for &command in &commands {
                let mut ledger = Ledger::new(payments.clone(), balances.clone());
                one_by_one.push(ledger.apply(command).unwrap());
                write_back(&ledger, &mut payments, &mut balances);
            }

            // The same commands in two batches, cut anywhere.
            let (mut batched_payments, mut batched_balances) = (HashMap::new(), wallets(opening));
            let mut batched = Vec::new();
            let cut = split.min(commands.len());
            for part in [&commands[..cut], &commands[cut..]] {
                let mut ledger = Ledger::new(batched_payments.clone(), batched_balances.clone());
                for &command in part {
                    batched.push(ledger.apply(command).unwrap());
                }
                write_back(&ledger, &mut batched_payments, &mut batched_balances);
            }
            prop_assert_eq!(&batched, &one_by_one);
            prop_assert_eq!(&batched_payments, &payments);
            prop_assert_eq!(&batched_balances, &balances);

            for customer in (0..CUSTOMERS).map(Uuid::from_u128) {
                let kept: i64 = payments
                    .values()
                    .filter(|p| p.customer_id == customer && p.status == PaymentStatus::Charged)
                    .map(|p| p.amount_minor)
                    .sum();
                prop_assert!(balances[&customer] >= 0);
                prop_assert_eq!(balances[&customer] + kept, opening, "money is conserved");
            }
        }
    }

    #[test]
    fn a_refund_first_voids_the_charge_and_a_second_charge_answers_as_the_first() {
        let (order, customer) = (Uuid::from_u128(7), Uuid::from_u128(1));
        let mut ledger = Ledger::new(HashMap::new(), HashMap::from([(customer, 500)]));
        let refund = Instruction::Refund {
            order_id: order,
            customer_id: customer,
        };
        let charge = Instruction::Charge {
            order_id: order,
            customer_id: customer,
            amount_minor: 100,
        };
        assert_eq!(ledger.apply(refund), Ok(Reply::PaymentRefunded));
        assert!(matches!(
            ledger.apply(charge),
            Ok(Reply::PaymentDeclined { .. })
        ));
        assert!(ledger.balances().is_empty(), "no money moved");

        let other = Uuid::from_u128(8);
        let charge = Instruction::Charge {
            order_id: other,
            customer_id: customer,
            amount_minor: 300,
        };
        assert_eq!(ledger.apply(charge), Ok(Reply::PaymentCharged));
        assert_eq!(ledger.apply(charge), Ok(Reply::PaymentCharged));
        assert_eq!(ledger.balances(), [(customer, 200)]);
        let unknown = Instruction::Charge {
            order_id: Uuid::from_u128(9),
            customer_id: Uuid::from_u128(99),
            amount_minor: 1,
        };
        assert_eq!(ledger.apply(unknown), Err(NoWallet(Uuid::from_u128(99))));
    }
}
