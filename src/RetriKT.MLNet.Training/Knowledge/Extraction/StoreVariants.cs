using System.Diagnostics;
using System.Globalization;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>Options of <see cref="StoreVariants.Add"/>.</summary>
public sealed class StoreVariantOptions
{
    /// <summary>Variants made from each generated sample: even ones are spans, odd ones drop words. Default 2.</summary>
    public int PerSample = 2;
    /// <summary>
    /// Samples with fewer words (as the extractor's length filter counts them: runs of letters, digits and apostrophes,
    /// so "," is no word; a pair's second text, the part that varies) are left without variants (a span of a short text
    /// says little). Default 6.
    /// </summary>
    public int MinWords = 6;
    /// <summary>Shortest span, as a share of the sample's words (never under 4 words). Default 0.4.</summary>
    public double MinSpanShare = 0.4;
    /// <summary>Longest span, as a share of the sample's words. Default 0.9.</summary>
    public double MaxSpanShare = 0.9;
    /// <summary>Chance that a word-drop variant leaves out each word. Default 0.2.</summary>
    public double WordDropRate = 0.2;
    /// <summary>Texts the teacher scores per call (the progress granularity, and the cancellation granularity of a scorer that does not take the token). Default 512.</summary>
    public int ScoringChunk = 512;
    /// <summary>Seed of the spans and drops. Default 1.</summary>
    public int Seed = 1;

    internal void Validate()
    {
        static void Check(bool ok, string message) { if (!ok) throw new ArgumentOutOfRangeException(null, message); }
        Check(PerSample >= 0, $"StoreVariantOptions.PerSample must be >= 0, found {PerSample}.");
        Check(MinWords >= 2, $"StoreVariantOptions.MinWords must be >= 2, found {MinWords}.");
        Check(MinSpanShare is > 0 and <= 1, $"StoreVariantOptions.MinSpanShare must be in (0, 1], found {MinSpanShare}.");
        Check(MaxSpanShare >= MinSpanShare && MaxSpanShare <= 1, $"StoreVariantOptions.MaxSpanShare must be in [MinSpanShare {MinSpanShare}, 1], found {MaxSpanShare}.");
        Check(WordDropRate is >= 0 and < 1, $"StoreVariantOptions.WordDropRate must be in [0, 1), found {WordDropRate}.");
        Check(ScoringChunk >= 1, $"StoreVariantOptions.ScoringChunk must be >= 1, found {ScoringChunk}.");
    }
}

/// <summary>
/// Teacher-labelled variants of a store's generated samples: spans of each sample and copies with words left out, each
/// given the teacher's own soft label over the new text (not the original's), filed under the teacher's most probable
/// label with <see cref="KnowledgeSource.Variant"/>. Every variant is new text with a word in it: one that comes out as its
/// sample or as an earlier variant of it, or as punctuation alone, is drawn again (up to <see cref="Draws"/> times, then
/// left out), so no sample weighs twice. The
/// teacher is needed once, at training time, for a forward pass per variant; no generation. A tiny student learns from them what each part of a sentence is worth to the teacher, which
/// whole sentences alone teach it poorly (docs/KNOWLEDGE-EXTRACTION.md, "Variants").
/// </summary>
public static class StoreVariants
{
    /// <summary>
    /// Draws per variant before it is left out. A word-drop of a 6-word sample at the default rate leaves every word in
    /// a quarter of its draws (0.8^6); eight draws all doing so happen about once in 60,000 variants.
    /// </summary>
    public const int Draws = 8;

    /// <summary>
    /// A new store: <paramref name="store"/>'s entries in their order, then the variants of its
    /// <see cref="KnowledgeSource.Generated"/> entries (few-shot, imported, variant and unlabelled entries are not varied). For a
    /// sentence pair only the second text varies (the part the teacher generated; the first is the real text it was given),
    /// its words counted for <see cref="StoreVariantOptions.MinWords"/>; the teacher labels the new pair.
    /// </summary>
    /// <param name="store">The store to vary (left unchanged).</param>
    /// <param name="teacher">The teacher's label scorer over the store's labels, in the store's order (the extraction's verbalizer).</param>
    /// <param name="options">How many variants and of what kind.</param>
    /// <param name="log">Receives one line when done (counts and time); may be null.</param>
    /// <param name="progress">Called after each scoring chunk with the variants scored so far and their total; may be null.</param>
    /// <param name="cancellation">Checked between scoring chunks, and handed to the scorer (the verbalizer checks it before each teacher pass).</param>
    public static KnowledgeStore Add(KnowledgeStore store, ILabelScorer teacher, StoreVariantOptions options,
        Action<string>? log = null, Action<int, int>? progress = null, CancellationToken cancellation = default)
    {
        ArgumentNullException.ThrowIfNull(store); ArgumentNullException.ThrowIfNull(teacher); ArgumentNullException.ThrowIfNull(options);
        options.Validate();
        if (options.PerSample == 0) return store;
        var clock = Stopwatch.StartNew();
        var rng = SeedMixer.Random(options.Seed, "store-variants");
        var texts = new List<(string Text, string? Text2)>();
        int varied = 0, repeats = 0;
        foreach (var e in store.Entries)
        {
            if (e.Source != KnowledgeSource.Generated) continue;
            if (e.Text is null) throw new InvalidOperationException("A store entry has no text; variants need the store's texts (a store saved without texts cannot be varied).");
            // A pair's second text is what the teacher wrote after a real first text, which hundreds of samples share.
            // Varied, it moves the teacher's label (MRPC stand-in teacher, 200 real pairs, two variants each: 22 % of the
            // labels flip, mean |Δp| 0.19); the first text varied moves it little (5 %, 0.036), so such variants were
            // copies of their sample's label on fragments of the few real texts.
            var varying = e.Text2 ?? e.Text;
            if (TextStatistics.Words(varying).Count < options.MinWords) continue;
            var words = varying.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            varied++;
            var seen = new HashSet<string>(StringComparer.Ordinal) { string.Join(' ', words) };
            for (int v = 0; v < options.PerSample; v++)
                for (int draw = 0; draw < Draws; draw++)
                {
                    var text = v % 2 == 0 ? Span(words, options, rng) : DropWords(words, options, rng);
                    // A span of a run of punctuation holds no word: no text to label (the length filter would drop it).
                    if (TextStatistics.Words(text).Count == 0 || !seen.Add(text)) { repeats++; continue; }
                    texts.Add(e.Text2 is null ? (text, null) : (e.Text, text));
                    break;
                }
        }

        var entries = new List<KnowledgeEntry>(store.Count + texts.Count);
        entries.AddRange(store.Entries);
        UnlabeledText.Label(texts, teacher, store.LabelNames, KnowledgeSource.Variant, options.ScoringChunk, entries, "variant", progress, cancellation);
        log?.Invoke(string.Format(CultureInfo.InvariantCulture,
            "Store variants: {0} teacher-labelled variants of {1} generated samples ({2} per sample; spans and word drops; {3} draws that repeated their sample or an earlier variant, or held no word, drawn again) in {4:F0} s; store {5} -> {6} entries.",
            texts.Count, varied, options.PerSample, repeats, clock.Elapsed.TotalSeconds, store.Count, entries.Count));
        return new KnowledgeStore(store.LabelNames, entries);
    }

    /// <summary>A contiguous run of words covering between MinSpanShare and MaxSpanShare of them (at least 4).</summary>
    private static string Span(string[] words, StoreVariantOptions o, Random rng)
    {
        double share = o.MinSpanShare + (o.MaxSpanShare - o.MinSpanShare) * rng.NextDouble();
        int length = Math.Min(words.Length, Math.Max(4, (int)Math.Round(words.Length * share)));
        int start = rng.Next(words.Length - length + 1);
        return string.Join(' ', words, start, length);
    }

    /// <summary>The words in order with each left out at WordDropRate (the whole text when fewer than 3 would stay).</summary>
    private static string DropWords(string[] words, StoreVariantOptions o, Random rng)
    {
        var kept = words.Where(_ => rng.NextDouble() >= o.WordDropRate).ToArray();
        return string.Join(' ', kept.Length >= 3 ? kept : words);
    }
}
