//! The directory against a brute-force oracle: every device checked one by
//! one with [`TagExpr::matches`] must give what the index gives.

use super::*;

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TAGS: [&str; 12] = [
    "vip",
    "svip",
    "city:bj",
    "city:sh",
    "city:gz",
    "os:ios",
    "os:android",
    "beta",
    "churned",
    "lang:en",
    "lang:zh",
    "promo_ok",
];

fn tag(i: u64) -> Tag {
    Tag::new(TAGS[i as usize % TAGS.len()]).expect("valid")
}

fn random_expr(rng: &mut Rng, depth: usize) -> TagExpr {
    if depth <= 1 || rng.below(3) == 0 {
        return TagExpr::Tag(tag(rng.below(TAGS.len() as u64)));
    }
    match rng.below(3) {
        0 => TagExpr::Not(Box::new(random_expr(rng, depth - 1))),
        kind => {
            let operands = (0..1 + rng.below(3)).map(|_| random_expr(rng, depth - 1)).collect();
            if kind == 1 { TagExpr::And(operands) } else { TagExpr::Or(operands) }
        }
    }
}

#[test]
fn the_index_selects_what_checking_every_device_selects() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut directory = Directory::default();
    for i in 0..3000 {
        let tags = (0..rng.below(6)).map(|_| tag(rng.below(TAGS.len() as u64))).collect();
        directory.put(ClientId::new(format!("d{i}")).expect("id"), DeviceEntry { alias: None, tags });
    }
    // Churn: some devices change tags or go, so the index must follow.
    for i in (0..3000).step_by(7) {
        let device = ClientId::new(format!("d{i}")).expect("id");
        if i % 2 == 0 {
            directory.remove(&device);
        } else {
            let tags = [tag(rng.below(TAGS.len() as u64))].into_iter().collect();
            directory.put(device, DeviceEntry { alias: None, tags });
        }
    }
    for round in 0..2000 {
        let expr = random_expr(&mut rng, 1 + (round % MAX_EXPR_DEPTH));
        let oracle: HashSet<ClientId> =
            directory.iter().filter(|(_, entry)| expr.matches(&entry.tags)).map(|(d, _)| d.clone()).collect();
        assert_eq!(directory.select(&expr), oracle, "{expr:?}");
    }
}

#[test]
fn aliases_name_several_devices_and_follow_changes() {
    let mut directory = Directory::default();
    let alias = Alias::new("user:42").expect("valid");
    for device in ["phone", "tablet"] {
        let entry = DeviceEntry { alias: Some(alias.clone()), tags: BTreeSet::new() };
        directory.put(ClientId::new(device).expect("id"), entry);
    }
    assert_eq!(directory.alias(&alias).map(ClientId::as_str).collect::<Vec<_>>(), ["phone", "tablet"]);
    directory.put(ClientId::new("tablet").expect("id"), DeviceEntry::default());
    directory.remove(&ClientId::new("gone").expect("id"));
    assert_eq!(directory.alias(&alias).map(ClientId::as_str).collect::<Vec<_>>(), ["phone"]);
    directory.remove(&ClientId::new("phone").expect("id"));
    assert_eq!(directory.alias_len(&alias), 0);
}

#[test]
fn tags_aliases_and_expressions_are_bounded() {
    assert!(Tag::new("city:bj").is_ok());
    for bad in ["", "VIP", "a b", "é", &"x".repeat(65)] {
        assert_eq!(Tag::new(bad), Err(DirectoryError::InvalidTag), "{bad:?}");
    }
    assert_eq!(Alias::new(""), Err(DirectoryError::InvalidAlias));
    assert_eq!(Alias::new("a\nb"), Err(DirectoryError::InvalidAlias));
    let leaf = || TagExpr::Tag(Tag::new("a").expect("valid"));
    let mut deep = leaf();
    for _ in 0..MAX_EXPR_DEPTH {
        deep = TagExpr::Not(Box::new(deep));
    }
    assert_eq!(deep.check(), Err(DirectoryError::TooDeep(MAX_EXPR_DEPTH)));
    let wide = TagExpr::Or((0..=MAX_EXPR_LEAVES).map(|_| leaf()).collect());
    assert_eq!(wide.check(), Err(DirectoryError::TooManyLeaves(MAX_EXPR_LEAVES)));
    // An app with higher limits takes them, up to the ceilings.
    let roomy = DirectoryLimits {
        expr_depth: MAX_EXPR_DEPTH + 1,
        expr_leaves: MAX_EXPR_LEAVES + 1,
        ..Default::default()
    };
    assert!(roomy.within_ceiling());
    assert_eq!((deep.check_within(&roomy), wide.check_within(&roomy)), (Ok(()), Ok(())));
    let tight = DirectoryLimits { expr_depth: 2, ..Default::default() };
    assert_eq!(
        TagExpr::Not(Box::new(TagExpr::Not(Box::new(leaf())))).check_within(&tight),
        Err(DirectoryError::TooDeep(2))
    );
    assert!(!DirectoryLimits { expr_leaves: 0, ..Default::default() }.within_ceiling());
    assert!(!DirectoryLimits { tags_per_device: 10_001, ..Default::default() }.within_ceiling());
    assert_eq!(TagExpr::And(vec![]).check(), Err(DirectoryError::EmptyOperator));
    assert_eq!(TagExpr::Or(vec![leaf(), TagExpr::Not(Box::new(leaf()))]).check(), Ok(()));
}
