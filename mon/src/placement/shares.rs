//! How many PG slots each failure domain (and each OSD inside one) should hold.
//!
//! Shares are proportional to weight (size x reweight), except that a domain can hold at
//! most one slot of each PG: a domain whose proportional share exceeds `pg_count` is capped
//! there and the rest is spread over the others in proportion to their weights
//! ("water-filling"). Shares are real numbers; placement may round each to its floor or
//! ceiling.

/// Splits `total` slots over items of the given weights with at most `cap` per item.
pub fn water_fill(weights: &[f64], total: f64, cap: f64) -> Vec<f64> {
    let mut shares = vec![0.0; weights.len()];
    let mut capped = vec![false; weights.len()];
    loop {
        let capped_total: f64 = capped.iter().filter(|&&c| c).map(|_| cap).sum();
        let free_weight: f64 = weights
            .iter()
            .zip(&capped)
            .filter(|(_, &c)| !c)
            .map(|(w, _)| *w)
            .sum();
        let remaining = (total - capped_total).max(0.0);
        let mut newly_capped = false;
        for (i, &weight) in weights.iter().enumerate() {
            if capped[i] {
                shares[i] = cap;
                continue;
            }
            shares[i] = if free_weight > 0.0 {
                remaining * weight / free_weight
            } else {
                0.0
            };
            if shares[i] > cap + 1e-9 {
                capped[i] = true;
                newly_capped = true;
            }
        }
        if !newly_capped {
            return shares;
        }
    }
}

/// Integer bounds around a real share: floor and ceiling (equal when the share is whole).
pub fn bounds(share: f64) -> (u32, u32) {
    let near = share.round();
    if (share - near).abs() < 1e-6 {
        (near as u32, near as u32)
    } else {
        (share.floor() as u32, share.ceil() as u32)
    }
}

/// Whole-number targets summing to `total`, each within the floor/ceiling of its share.
/// The ceilings go first to items that already hold more than their floor (`current`), so
/// that rounding moves as little data as possible, then to the largest remainders.
pub fn integer_targets(shares: &[f64], total: u32, current: &[u32]) -> Vec<u32> {
    let mut targets: Vec<u32> = shares.iter().map(|&s| bounds(s).0).collect();
    let assigned: u32 = targets.iter().sum();
    let mut extra = total.saturating_sub(assigned);
    let mut order: Vec<usize> = (0..shares.len())
        .filter(|&i| bounds(shares[i]).1 > targets[i])
        .collect();
    order.sort_by(|&a, &b| {
        let holds_more = |i: usize| current[i] > targets[i];
        holds_more(b)
            .cmp(&holds_more(a))
            .then((shares[b] - shares[b].floor()).total_cmp(&(shares[a] - shares[a].floor())))
            .then(a.cmp(&b))
    });
    for i in order {
        if extra == 0 {
            break;
        }
        targets[i] += 1;
        extra -= 1;
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proportional_when_no_cap_binds() {
        let shares = water_fill(&[1.0, 1.0, 2.0], 40.0, 100.0);
        assert_eq!(shares, vec![10.0, 10.0, 20.0]);
    }

    #[test]
    fn heavy_domain_is_capped_and_rest_redistributed() {
        // 3 domains, pg_count 10, 3 slots each: the heavy one can hold only 10.
        let shares = water_fill(&[10.0, 1.0, 1.0], 30.0, 10.0);
        assert_eq!(shares, vec![10.0, 10.0, 10.0]);
        let shares = water_fill(&[10.0, 1.0, 1.0, 2.0], 20.0, 10.0);
        assert!((shares[0] - 10.0).abs() < 1e-9);
        assert!((shares[1] - 2.5).abs() < 1e-9 && (shares[3] - 5.0).abs() < 1e-9);
    }

    #[test]
    fn integer_targets_sum_and_prefer_current_holders() {
        let targets = integer_targets(&[2.5, 2.5, 5.0], 10, &[2, 3, 5]);
        assert_eq!(targets, vec![2, 3, 5]);
        let targets = integer_targets(&[2.5, 2.5, 5.0], 10, &[3, 2, 5]);
        assert_eq!(targets, vec![3, 2, 5]);
    }
}
