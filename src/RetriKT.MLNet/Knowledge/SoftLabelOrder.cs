namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Evidence that soft labels read without their label names (a store view without SlotNames, JSONL lines without a
/// header) are in another order than the names they were read with: read so, every entry carries another label's
/// probabilities, and a student trained on them learns the labels swapped, without an error. Each entry's hard label
/// is named, so such an order shows: the few-shot entries (gold labels, one-hot soft labels) mostly give another label
/// the highest probability, or the entries of each moved label mostly rank one other label first and those labels are
/// a permutation. (A teacher biased towards one label ranks that label first on most entries of several labels: no
/// permutation, no finding.)
/// </summary>
internal static class SoftLabelOrder
{
    /// <summary>What shows the other order.</summary>
    /// <param name="ByFewShot">True: few-shot entries (<see cref="Count"/> of <see cref="Of"/>); false: the entries labelled <see cref="Label"/>.</param>
    /// <param name="Count">Entries that rank another label first.</param>
    /// <param name="Of">Entries counted (few-shot entries, or those labelled <see cref="Label"/>).</param>
    /// <param name="First">The first such entry (an index into the entries given).</param>
    /// <param name="Label">The label whose entries rank <see cref="RankedFirst"/> first (the first entry's label when <see cref="ByFewShot"/>).</param>
    /// <param name="RankedFirst">The label they rank first.</param>
    internal sealed record Finding(bool ByFewShot, int Count, int Of, int First, int Label, int RankedFirst);

    /// <summary>The evidence that <paramref name="entries"/>' soft labels are in another order than their labels' (over <paramref name="labelCount"/> labels), or null.</summary>
    internal static Finding? Find(IReadOnlyList<KnowledgeEntry> entries, int labelCount)
    {
        int k = labelCount;
        int fewShot = 0, fewShotMoved = 0, firstFewShotMoved = -1;
        var rowsOf = new int[k];
        var ranked = new int[k, k];
        var firstRanked = new int[k, k];
        for (int i = 0; i < entries.Count; i++)
        {
            var e = entries[i];
            var p = e.SoftLabel;
            int top = 0;
            for (int j = 1; j < k; j++) if (p[j] > p[top]) top = j;
            bool moved = p[top] > p[e.Label];
            if (e.Source == KnowledgeSource.FewShot)
            {
                fewShot++;
                if (moved && fewShotMoved++ == 0) firstFewShotMoved = i;
            }
            rowsOf[e.Label]++;
            if (moved && ranked[e.Label, top]++ == 0) firstRanked[e.Label, top] = i;
        }
        // The few-shot entries say it for certain, at any fidelity: their soft label is their gold label, one-hot.
        if (fewShotMoved * 2 > fewShot)
        {
            var e = entries[firstFewShotMoved];
            int top = Array.IndexOf(e.SoftLabel, e.SoftLabel.Max());
            return new Finding(true, fewShotMoved, fewShot, firstFewShotMoved, e.Label, top);
        }
        var movedTo = Enumerable.Range(0, k).Select(l => Enumerable.Range(0, k).FirstOrDefault(m => m != l && ranked[l, m] * 2 > rowsOf[l], l)).ToArray();
        if (movedTo.Distinct().Count() == k && Enumerable.Range(0, k).FirstOrDefault(i => movedTo[i] != i, -1) is var label and >= 0)
        {
            int other = movedTo[label];
            return new Finding(false, ranked[label, other], rowsOf[label], firstRanked[label, other], label, other);
        }
        return null;
    }

    /// <summary>Probabilities as a short list for a message ("0.1, 0.9").</summary>
    internal static string Probabilities(IEnumerable<float> p) => string.Join(", ", p.Select(x => x.ToString("G3", System.Globalization.CultureInfo.InvariantCulture)));
}
