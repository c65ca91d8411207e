//! What Redis must hold, judged from Postgres alone: each order's reservation record from its
//! sagas' stock steps, and each product's counters from its units on hand. This is the rule
//! `orderly reconcile` rebuilds Redis by after Redis lost its data, and checks it against.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::{order::OrderLine, saga::StepStatus};

/// The state of an order's reservation record, as `reserve.lua` and `release.lua` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Record {
    /// The order holds its lines' units.
    Reserved,
    /// `reserve.lua` refused the order; it holds nothing.
    Rejected,
    /// Released, or a tombstone written before any reserve landed; holds nothing.
    Released,
}

impl Record {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Rejected => "rejected",
            Self::Released => "released",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "reserved" => Some(Self::Reserved),
            "rejected" => Some(Self::Rejected),
            "released" => Some(Self::Released),
            _ => None,
        }
    }
}

/// What an order's record must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// No stock command was ever sent: no record.
    Absent,
    Settled(Record),
    /// A reserve sent that the script has not answered yet: whatever Redis holds is right. A
    /// rebuild writes no record, so the command's redelivery or retry runs the script on the
    /// rebuilt counters; no reply can be on its way, since the answer is recorded with its reply.
    Undecided,
    /// A release in flight: it may have run or not, so released is right, and so is what the
    /// reserve left before it: held, refused, or — with no answer recorded — anything. A
    /// rebuild writes released: the release replays as a no-op, and a reply already on its way
    /// says the same.
    Releasing {
        decided: Option<Record>,
    },
}

impl Expected {
    /// The record a rebuild writes, if any.
    pub fn rebuilt(self) -> Option<Record> {
        match self {
            Self::Absent | Self::Undecided => None,
            Self::Settled(record) => Some(record),
            Self::Releasing { .. } => Some(Record::Released),
        }
    }

    /// Whether `found` (the record Redis holds, if any) agrees.
    pub fn accepts(self, found: Option<Record>) -> bool {
        match self {
            Self::Absent => found.is_none(),
            Self::Settled(record) => found == Some(record),
            Self::Undecided | Self::Releasing { decided: None } => true,
            Self::Releasing {
                decided: Some(decided),
            } => found == Some(Record::Released) || found == Some(decided),
        }
    }
}

/// The record an order must have, from its checkout saga's `reserve_stock` step, what
/// `reserve.lua` answered if the inventory role recorded an answer (`decided`), and, once the
/// order was confirmed and then cancelled, its cancellation saga's `release_stock` step.
///
/// A reserve the saga has not heard back from is what the script answered: its reply, if one is
/// on its way, says the same. Rebuilding it as held regardless would keep units a refused order
/// never took (for good, once the refusal is applied), or overcommit the product.
pub fn expected(
    reserve: StepStatus,
    decided: Option<Record>,
    release: Option<StepStatus>,
) -> Expected {
    match (reserve, release) {
        (StepStatus::Pending | StepStatus::Skipped, _) => Expected::Absent,
        (StepStatus::Running, _) => decided.map_or(Expected::Undecided, Expected::Settled),
        (StepStatus::Failed, _) => Expected::Settled(Record::Rejected),
        (StepStatus::Compensating, _) => Expected::Releasing { decided },
        // A confirmed order's reserve was granted, whatever was recorded of it.
        (StepStatus::Succeeded, Some(StepStatus::Running)) => Expected::Releasing {
            decided: Some(Record::Reserved),
        },
        (StepStatus::Compensated, _) | (StepStatus::Succeeded, Some(StepStatus::Succeeded)) => {
            Expected::Settled(Record::Released)
        }
        (StepStatus::Succeeded, _) => Expected::Settled(Record::Reserved),
    }
}

/// A product's two counters in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Level {
    pub available: i64,
    pub held: i64,
}

/// Products whose live reservations hold more than they have on hand: Postgres itself
/// disagrees with the reservations, and no counters can be right.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} product(s) hold more units than they have on hand", .0.len())]
pub struct Overcommitted(pub Vec<(Uuid, Level)>);

/// Each product's counters: `held` is what the reserved orders' lines take, `available` the
/// rest of what is on hand. Every product on hand gets counters, even at zero; a line of a
/// product with no stock level counts against zero on hand.
pub fn levels<'a>(
    on_hand: impl IntoIterator<Item = (Uuid, i64)>,
    reserved_lines: impl IntoIterator<Item = &'a OrderLine>,
) -> Result<BTreeMap<Uuid, Level>, Overcommitted> {
    let mut levels: BTreeMap<Uuid, Level> = on_hand
        .into_iter()
        .map(|(product, units)| {
            (
                product,
                Level {
                    available: units,
                    held: 0,
                },
            )
        })
        .collect();
    for line in reserved_lines {
        let level = levels.entry(line.product_id).or_default();
        level.available -= line.quantity;
        level.held += line.quantity;
    }
    let over: Vec<_> = levels
        .iter()
        .filter(|(_, level)| level.available < 0)
        .map(|(&product, &level)| (product, level))
        .collect();
    if over.is_empty() {
        Ok(levels)
    } else {
        Err(Overcommitted(over))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_confirmed_order_holds_its_units_until_its_cancellation_releases_them() {
        use StepStatus::*;
        let reserved = Some(Record::Reserved);
        assert_eq!(
            expected(Succeeded, reserved, None),
            Expected::Settled(Record::Reserved)
        );
        assert_eq!(
            expected(Succeeded, reserved, Some(Pending)),
            Expected::Settled(Record::Reserved)
        );
        assert_eq!(
            expected(Succeeded, reserved, Some(Running)).rebuilt(),
            Some(Record::Released)
        );
        assert_eq!(
            expected(Succeeded, reserved, Some(Succeeded)),
            Expected::Settled(Record::Released)
        );
    }

    #[test]
    fn a_reserve_in_flight_is_rebuilt_as_the_script_answered() {
        for answer in [Record::Reserved, Record::Rejected] {
            let e = expected(StepStatus::Running, Some(answer), None);
            assert_eq!(e.rebuilt(), Some(answer));
            assert!(!e.accepts(None), "{answer:?}");
        }
    }

    #[test]
    fn an_undecided_reserve_is_rebuilt_as_nothing_and_accepts_any_record() {
        let e = expected(StepStatus::Running, None, None);
        assert_eq!(e.rebuilt(), None);
        for found in [
            None,
            Some(Record::Reserved),
            Some(Record::Rejected),
            Some(Record::Released),
        ] {
            assert!(e.accepts(found));
        }
    }

    #[test]
    fn a_release_in_flight_accepts_what_the_reserve_left_or_released() {
        let e = expected(StepStatus::Compensating, Some(Record::Reserved), None);
        assert_eq!(e.rebuilt(), Some(Record::Released));
        assert!(e.accepts(Some(Record::Reserved)));
        assert!(e.accepts(Some(Record::Released)));
        assert!(!e.accepts(None));
        assert!(!e.accepts(Some(Record::Rejected)));

        let refused = expected(StepStatus::Compensating, Some(Record::Rejected), None);
        assert!(refused.accepts(Some(Record::Rejected)));
        assert!(refused.accepts(Some(Record::Released)));
        assert!(!refused.accepts(Some(Record::Reserved)));

        // With no answer recorded the reserve may not have run, or may have run unrecorded.
        let unknown = expected(StepStatus::Compensating, None, None);
        for found in [None, Some(Record::Reserved), Some(Record::Released)] {
            assert!(unknown.accepts(found));
        }
    }

    #[test]
    fn names_round_trip() {
        for record in [Record::Reserved, Record::Rejected, Record::Released] {
            assert_eq!(Record::parse(record.as_str()), Some(record));
        }
        assert_eq!(Record::parse("held"), None);
    }

    #[test]
    fn overcommitted_products_are_named() {
        let p = Uuid::from_u128(1);
        let q = Uuid::from_u128(2);
        let err = levels(
            [(p, 3), (q, 5)],
            &[
                OrderLine::new(p, 2),
                OrderLine::new(p, 2),
                OrderLine::new(q, 5),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err.0,
            vec![(
                p,
                Level {
                    available: -1,
                    held: 4
                }
            )]
        );
    }

    proptest! {
        /// A rebuilt record is always one the rule accepts, so a check right after a rebuild
        /// finds no drift.
        #[test]
        fn a_rebuild_agrees_with_its_own_check(
            r in 0..7usize,
            d in prop::option::of(prop_oneof![Just(Record::Reserved), Just(Record::Rejected)]),
            c in prop::option::of(0..7usize),
        ) {
            let e = expected(StepStatus::ALL[r], d, c.map(|c| StepStatus::ALL[c]));
            prop_assert!(e.accepts(e.rebuilt()));
        }

        /// On hand = available + held for every product, held is exactly the reserved lines,
        /// and nothing is negative when the lines fit.
        #[test]
        fn levels_conserve_what_is_on_hand(
            on_hand in prop::collection::vec(0i64..50, 1..6),
            lines in prop::collection::vec((0usize..6, 1i64..10), 0..30),
        ) {
            let products: Vec<Uuid> = (0..6u128).map(Uuid::from_u128).collect();
            let stock: Vec<(Uuid, i64)> =
                on_hand.iter().enumerate().map(|(i, &n)| (products[i], n)).collect();
            let lines: Vec<OrderLine> = lines
                .iter()
                .map(|&(i, quantity)| OrderLine { product_id: products[i], quantity })
                .collect();
            let held = |p: Uuid| lines.iter().filter(|l| l.product_id == p).map(|l| l.quantity).sum::<i64>();
            let units = |p: Uuid| stock.iter().find(|s| s.0 == p).map_or(0, |s| s.1);
            match levels(stock.iter().copied(), &lines) {
                Ok(levels) => {
                    for (&product, level) in &levels {
                        prop_assert!(level.available >= 0);
                        prop_assert_eq!(level.held, held(product));
                        prop_assert_eq!(level.available + level.held, units(product));
                    }
                    for &(product, _) in &stock {
                        prop_assert!(levels.contains_key(&product));
                    }
                }
                Err(Overcommitted(over)) => {
                    prop_assert!(!over.is_empty());
                    for (product, level) in over {
                        prop_assert!(held(product) > units(product));
                        prop_assert_eq!(level.available + level.held, units(product));
                    }
                }
            }
        }
    }
}
