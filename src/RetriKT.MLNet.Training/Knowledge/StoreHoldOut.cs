using RetriKT.MLNet.Common;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Knowledge;

/// <summary>
/// Held-out store entries as validation rows: the student's epoch and mix are then chosen on text the store holds
/// (generated, like the neighbours it retrieves) but the student never trained on. The pipeline and the
/// RetrievalClassifier trainer (<c>StoreValidationShare</c>) both hold out through here.
/// </summary>
internal static class StoreHoldOut
{
    /// <summary>A held-out entry and the label it validates as: the teacher's most probable label (ties to the lower index).</summary>
    public readonly record struct HeldOutEntry(KnowledgeEntry Entry, int TeacherLabel);

    /// <summary>
    /// Splits off <paramref name="share"/> of the store's generated entries (never the gold few-shot ones), chosen by
    /// <paramref name="seed"/>; the rest is the student's store. Never held out either: an entry whose (Text, Text2) the
    /// store holds more than once (its twin would stay, so the student would train on the validation row and retrieve it
    /// at cosine 1; a store of real sentences has them, SST-2's train.tsv repeats 371 texts), and one whose (Text, Text2)
    /// is in <paramref name="stay"/>. A store with neither draws as it did before the rule.
    /// </summary>
    public static (KnowledgeStore Kept, List<HeldOutEntry> HeldOut) Split(KnowledgeStore store, double share, int seed,
        IReadOnlySet<(string?, string?)>? stay = null)
    {
        if (share is < 0 or >= 1) throw new ArgumentOutOfRangeException(nameof(share), $"StoreValidationShare must be in [0, 1), found {share}.");
        var repeated = store.Entries.GroupBy(e => (e.Text, e.Text2)).Where(g => g.Count() > 1).Select(g => g.Key).ToHashSet();
        bool MayLeave(KnowledgeEntry e) => e.Source != KnowledgeSource.FewShot && !repeated.Contains((e.Text, e.Text2)) && stay?.Contains((e.Text, e.Text2)) != true;
        var generated = Enumerable.Range(0, store.Count).Where(i => MayLeave(store.Entries[i])).ToList();
        int count = (int)Math.Round(generated.Count * share);
        if (count == 0) return (store, []);
        var rng = SeedMixer.Random(seed, "store-validation");
        var heldOut = generated.OrderBy(_ => rng.Next()).Take(count).ToHashSet();
        var rows = new List<HeldOutEntry>(count);
        foreach (int i in heldOut.Order())
        {
            var e = store.Entries[i];
            if (e.Text is null) throw new InvalidOperationException($"Store entry {i} has no text; holding out validation rows needs the store's texts.");
            rows.Add(new HeldOutEntry(e, RetrievalMix.ArgMax(e.SoftLabel)));
        }
        var kept = new KnowledgeStore(store.LabelNames, store.Entries.Where((_, i) => !heldOut.Contains(i)));
        return (kept, rows);
    }
}
