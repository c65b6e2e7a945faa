using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// Teacher-labelled store variants on the real SST-2 stand-in teacher and real SST-2 sentences: each variant is a span
/// or an in-order subset of its sample's words, carries the teacher's soft label of its own text, and only generated
/// samples are varied.
/// </summary>
public sealed class StoreVariantsTests
{
    private static KnowledgeStore Store(List<(string Text, string? Text2)> sentences) => new(["0", "1"],
        sentences.Select((s, i) => i < 2
            ? KnowledgeEntry.Gold(s.Text, null, i % 2, 2)
            : new KnowledgeEntry(s.Text, null, i % 2, i % 2 == 0 ? [0.8f, 0.2f] : [0.3f, 0.7f], 0.7f, KnowledgeSource.Generated)));

    [SharedDataFact]
    public void VariantsAreSpansOrWordDropsWithTheTeachersOwnSoftLabels()
    {
        using var teacher = ShippedTeachers.Sst2();
        var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"]);
        var sentences = ShippedTeachers.Sst2DevSentences(40);
        var store = Store(sentences);
        var options = new StoreVariantOptions { PerSample = 2, ScoringChunk = 7 };
        var reports = new List<(int Done, int Total)>();
        var varied = StoreVariants.Add(store, scorer, options, progress: (done, total) => reports.Add((done, total)));

        int expected = 2 * store.Entries.Count(e => e.Source == KnowledgeSource.Generated && TextStatistics.Words(e.Text!).Count >= options.MinWords);
        Assert.True(expected > 40, $"too few long sentences to test: {expected / 2}");
        Assert.Equal(store.Count + expected, varied.Count);
        Assert.Equal(store.Entries, varied.Entries.Take(store.Count));
        // Progress after every chunk of 7, rising to the total.
        Assert.Equal((expected + 6) / 7, reports.Count);
        Assert.Equal((expected, expected), reports[^1]);
        Assert.True(reports.Zip(reports.Skip(1)).All(p => p.First.Done < p.Second.Done));
        var variants = varied.Entries.Skip(store.Count).ToList();
        Assert.All(variants, v => Assert.Equal(KnowledgeSource.Variant, v.Source));

        // Spans and drops, in the order of the generated samples they came from (few-shot entries are not varied).
        var origins = store.Entries.Where(e => e.Source == KnowledgeSource.Generated && TextStatistics.Words(e.Text!).Count >= options.MinWords).ToList();
        for (int i = 0; i < variants.Count; i++)
        {
            var from = origins[i / 2].Text!.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var words = variants[i].Text!.Split(' ');
            if (i % 2 == 0)
            {
                Assert.True(words.Length >= 4 && words.Length < from.Length || from.Length <= 4, $"variant {i}: span of {words.Length} of {from.Length} words");
                Assert.Contains(" " + variants[i].Text + " ", " " + string.Join(' ', from) + " ");
            }
            else Assert.True(IsInOrderSubset(words, from), $"variant {i} is not an in-order subset of its sample: '{variants[i].Text}'");
        }
        Assert.Contains(Enumerable.Range(0, variants.Count).Where(i => i % 2 == 1),
            i => variants[i].Text!.Split(' ').Length < origins[i / 2].Text!.Split(' ', StringSplitOptions.RemoveEmptyEntries).Length);

        // Each variant's soft label is the teacher's on its own text, filed under its most probable label.
        var own = scorer.Probabilities(variants.Select(v => (v.Text!, (string?)null)).ToList());
        for (int i = 0; i < variants.Count; i++)
        {
            // Within 1e-5, not "equal to 5 decimals": the variant was scored in another batch, and a 5e-7 difference
            // (batch padding) once rounded 0.5205454 and 0.5205449 to different fifth decimals.
            double gap = Math.Abs(own[i][0] - variants[i].SoftLabel[0]);
            Assert.True(gap <= 1e-5, $"variant {i}: soft label {variants[i].SoftLabel[0]:R} against the teacher's {own[i][0]:R} on its text");
            if (Math.Abs(own[i][0] - own[i][1]) > 1e-5) Assert.Equal(own[i][0] >= own[i][1] ? 0 : 1, variants[i].Label);
            Assert.Equal(variants[i].SoftLabel[variants[i].Label], variants[i].Fidelity);
        }
        // Not copies of the samples' labels: on some variants the teacher changes its mind about the words that are left.
        var whole = scorer.Probabilities(origins.Select(o => (o.Text!, (string?)null)).ToList());
        Assert.Contains(Enumerable.Range(0, variants.Count), i => variants[i].Label != (whole[i / 2][0] >= whole[i / 2][1] ? 0 : 1));

        // Same seed, same variants; another seed, other ones.
        Assert.Equal(variants.Select(v => v.Text), StoreVariants.Add(store, scorer, options).Entries.Skip(store.Count).Select(v => v.Text));
        Assert.NotEqual(variants.Select(v => v.Text), StoreVariants.Add(store, scorer, new StoreVariantOptions { Seed = 2 }).Entries.Skip(store.Count).Select(v => v.Text));
    }

    /// <summary>
    /// A sentence pair's variants vary its second text, the part the teacher generated after a real first text, and keep
    /// the first; they varied the first, which the teacher's label hardly follows (on these pairs 5 % of such variants
    /// changed it, against 22 % for the second text), so they were copies of their sample's label on fragments of the
    /// few real texts every sample of a store shares. A pair whose second text is shorter than MinWords is not varied.
    /// </summary>
    [SharedDataFact]
    public void PairVariantsVaryTheGeneratedSecondTextAndKeepTheRealFirst()
    {
        using var teacher = ShippedTeachers.Mrpc();
        var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Mrpc, ["0", "1"]);
        var pairs = global::RetriKT.Samples.Data.FewShotBenchmarks.Load(SharedData.Path("data"), "MRPC", 13).Test.Take(24)
            .Select(r => (r.Text, Text2: r.Text2)).ToList();
        pairs[3] = (pairs[3].Text, "they said no");   // a long first text, a second of three words
        var store = new KnowledgeStore(["0", "1"], pairs.Select((p, i) =>
            new KnowledgeEntry(p.Text, p.Text2, i % 2, i % 2 == 0 ? [0.8f, 0.2f] : [0.3f, 0.7f], 0.7f, KnowledgeSource.Generated)));
        var options = new StoreVariantOptions { PerSample = 2 };
        var variants = StoreVariants.Add(store, scorer, options).Entries.Skip(store.Count).ToList();

        var origins = store.Entries.Where(e => TextStatistics.Words(e.Text2!).Count >= options.MinWords).ToList();
        Assert.Equal(pairs.Count - 1, origins.Count);
        Assert.Equal(2 * origins.Count, variants.Count);
        for (int i = 0; i < variants.Count; i++)
        {
            var origin = origins[i / 2];
            Assert.Equal(origin.Text, variants[i].Text);
            var from = origin.Text2!.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            var words = variants[i].Text2!.Split(' ');
            if (i % 2 == 0) Assert.Contains(" " + variants[i].Text2 + " ", " " + string.Join(' ', from) + " ");
            else Assert.True(IsInOrderSubset(words, from), $"variant {i} is not an in-order subset of its second text: '{variants[i].Text2}'");
            Assert.True(words.Length < from.Length, $"variant {i} keeps all {from.Length} words of its second text");
        }
        // The teacher's soft label of each new pair.
        var own = scorer.Probabilities(variants.Select(v => (v.Text!, v.Text2)).ToList());
        for (int i = 0; i < variants.Count; i++)
            Assert.True(Math.Abs(own[i][0] - variants[i].SoftLabel[0]) <= 1e-5, $"variant {i}: soft label {variants[i].SoftLabel[0]:R} against the teacher's {own[i][0]:R} on its pair");
    }

    /// <summary>
    /// A word-drop that leaves out nothing is its sample again (0.8^n for n tokens): such draws used to be stored, so the
    /// sample weighed twice. Six-token samples repeat in a quarter of their drops; four variants per sample also make
    /// spans meet spans.
    /// </summary>
    [Fact]
    public void NoVariantRepeatsItsSampleOrAnotherVariantOfIt()
    {
        // Six words and a comma; every token names its sample ("w17c" is sample 17's third word).
        var samples = Enumerable.Range(0, 200).Select(i => $"w{i}a w{i}b w{i}c , w{i}d w{i}e w{i}f").ToList();
        var store = new KnowledgeStore(["0", "1"], samples.Select(t => new KnowledgeEntry(t, null, 1, [0.2f, 0.8f], 0.8f, KnowledgeSource.Generated)));
        var varied = StoreVariants.Add(store, new FixedScorer(), new StoreVariantOptions { PerSample = 4 });
        var variants = varied.Entries.Skip(store.Count).ToList();
        Assert.True(variants.Count >= 4 * samples.Count - 2, $"{variants.Count} variants of {samples.Count} samples, 4 asked for each");
        var bySample = variants.GroupBy(v => samples[int.Parse(v.Text!.Split(' ').First(t => t != ",")[1..^1], System.Globalization.CultureInfo.InvariantCulture)]).ToList();
        Assert.Equal(samples.Count, bySample.Count);
        Assert.All(bySample, g =>
        {
            Assert.DoesNotContain(g.Key, g.Select(v => v.Text));
            Assert.Equal(g.Count(), g.Select(v => v.Text).Distinct().Count());
        });

        // Words as the length filter counts them: "," is none, so a sample of five words and two commas gets no variant.
        var short5 = new KnowledgeStore(["0", "1"], [new KnowledgeEntry("warm , funny , and honest", null, 1, [0.2f, 0.8f], 0.8f, KnowledgeSource.Generated)]);
        Assert.Equal(1, StoreVariants.Add(short5, new FixedScorer(), new StoreVariantOptions()).Count);
    }

    /// <summary>
    /// A sample of six words and a run of punctuation has spans of punctuation alone ("-- -- -- --"): they were stored,
    /// labelled by the teacher, and trained the student on a text with no word in it (an eighth of the variants here).
    /// Such a draw is drawn again.
    /// </summary>
    [Fact]
    public void NoVariantIsWithoutAWord()
    {
        var sample = "w1 w2 w3 " + string.Join(' ', Enumerable.Repeat("--", 14)) + " w4 w5 w6";
        KnowledgeEntry Entry(string? first) => new(first ?? sample, first is null ? null : sample, 1, [0.2f, 0.8f], 0.8f, KnowledgeSource.Generated);
        foreach (var first in new[] { null, "a real first text" })
        {
            var store = new KnowledgeStore(["0", "1"], Enumerable.Range(0, 100).Select(_ => Entry(first)));
            var variants = StoreVariants.Add(store, new FixedScorer(), new StoreVariantOptions { PerSample = 2 }).Entries.Skip(store.Count).ToList();
            Assert.True(variants.Count > 150, $"{variants.Count} variants of 100 samples");
            Assert.All(variants, v => Assert.NotEmpty(TextStatistics.Words(first is null ? v.Text! : v.Text2!)));
        }
    }

    [SharedDataFact]
    public void NoVariantsLeavesTheStoreAndCancellationStopsScoring()
    {
        using var teacher = ShippedTeachers.Sst2();
        var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"]);
        var store = Store(ShippedTeachers.Sst2DevSentences(10));
        Assert.Same(store, StoreVariants.Add(store, scorer, new StoreVariantOptions { PerSample = 0 }));
        using var cancelled = new CancellationTokenSource();
        cancelled.Cancel();
        Assert.ThrowsAny<OperationCanceledException>(() => StoreVariants.Add(store, scorer, new StoreVariantOptions(), cancellation: cancelled.Token));
    }

    [Fact]
    public void BadOptionsAndTextlessStoresFailWithOneClearLine()
    {
        var scorer = new FixedScorer();
        var store = new KnowledgeStore(["0", "1"], [new KnowledgeEntry("a b c d e f g", null, 0, [0.9f, 0.1f], 0.9f, KnowledgeSource.Generated)]);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => StoreVariants.Add(store, scorer, new StoreVariantOptions { PerSample = -1 }));
        Assert.Contains("PerSample must be >= 0, found -1", e.Message);
        e = Assert.Throws<ArgumentOutOfRangeException>(() => StoreVariants.Add(store, scorer, new StoreVariantOptions { MinSpanShare = 0.8, MaxSpanShare = 0.5 }));
        Assert.Contains("MaxSpanShare must be in [MinSpanShare 0.8, 1], found 0.5", e.Message);
        var textless = new KnowledgeStore(["0", "1"], [new KnowledgeEntry(null, null, 0, [0.9f, 0.1f], 0.9f, KnowledgeSource.Generated)]);
        Assert.Contains("has no text", Assert.Throws<InvalidOperationException>(() => StoreVariants.Add(textless, scorer, new StoreVariantOptions())).Message);
        var wrongWidth = new FixedScorer(3);
        Assert.Contains("the store has 2 labels", Assert.Throws<InvalidOperationException>(() => StoreVariants.Add(store, wrongWidth, new StoreVariantOptions())).Message);
    }

    private static bool IsInOrderSubset(string[] words, string[] from)
    {
        int j = 0;
        foreach (var w in words)
        {
            while (j < from.Length && from[j] != w) j++;
            if (j++ == from.Length) return false;
        }
        return true;
    }

    /// <summary>A scorer that gives every text the same probabilities (only the option and shape checks use it).</summary>
    private sealed class FixedScorer(int labels = 2) : ILabelScorer
    {
        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) =>
            samples.Select(_ => Enumerable.Repeat(1f / labels, labels).ToArray()).ToArray();
    }
}
