//! Near-duplicate images: the same photo saved twice, re-encoded or resized, as web-scraped
//! datasets often hold. Found by a difference hash (dHash, after Neal Krawetz, "Kind of like
//! that", 2013): the grey image shrunk to 17×16, one bit per horizontally adjacent pair (is the
//! left one brighter?), 256 bits; two images whose hashes differ in at most
//! [`MAX_DISTANCE`] bits are duplicates. Re-encoding and resizing move a few bits; distinct
//! photos differ in about half of them.

use image::imageops::{self, FilterType};
use image::RgbImage;

/// A 256-bit difference hash.
pub type Hash = [u64; 4];

/// Most differing bits (of 256) between duplicates.
pub const MAX_DISTANCE: u32 = 24;

const W: u32 = 17;
const H: u32 = 16;

/// The difference hash of an image.
pub fn dhash(img: &RgbImage) -> Hash {
    let grey = imageops::grayscale(img);
    let small = imageops::resize(&grey, W, H, FilterType::Triangle);
    let mut hash = [0u64; 4];
    let mut bit = 0;
    for y in 0..H {
        for x in 0..W - 1 {
            if small.get_pixel(x, y)[0] > small.get_pixel(x + 1, y)[0] {
                hash[bit / 64] |= 1 << (bit % 64);
            }
            bit += 1;
        }
    }
    hash
}

/// Bits in which two hashes differ.
pub fn distance(a: &Hash, b: &Hash) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Sets of two or more duplicates among `hashes` (indices, each set in index order, sets in
/// order of their first index); `None` entries (images not read) belong to none. Pairs within
/// [`MAX_DISTANCE`] are joined transitively. Compares every pair: n²/2 popcounts, about a
/// second for 50,000 images.
pub fn duplicate_sets(hashes: &[Option<Hash>]) -> Vec<Vec<usize>> {
    let n = hashes.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for (i, a) in hashes.iter().enumerate() {
        let Some(a) = a else { continue };
        for (j, b) in hashes.iter().enumerate().skip(i + 1) {
            let Some(b) = b else { continue };
            if distance(a, b) <= MAX_DISTANCE {
                let (ri, rj) = (find(&mut parent, i), find(&mut parent, j));
                if ri != rj {
                    parent[ri.max(rj)] = ri.min(rj);
                }
            }
        }
    }
    let mut sets: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (i, h) in hashes.iter().enumerate() {
        if h.is_some() {
            let r = find(&mut parent, i);
            sets.entry(r).or_default().push(i);
        }
    }
    sets.into_values().filter(|s| s.len() > 1).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_join_transitively_and_skip_unread_images() {
        let h = |bits: u32| -> Option<Hash> {
            let mut x = [0u64; 4];
            for b in 0..bits {
                x[(b / 64) as usize] |= 1 << (b % 64);
            }
            Some(x)
        };
        // 0 ~ 1 (15 bits apart), 1 ~ 2 (15 apart), 0 and 2 are 30 apart: one set by chaining.
        let hashes = vec![h(0), h(15), h(30), None, h(200), h(201)];
        assert_eq!(duplicate_sets(&hashes), vec![vec![0, 1, 2], vec![4, 5]]);
        assert!(duplicate_sets(&[h(0), h(100)]).is_empty());
    }
}
