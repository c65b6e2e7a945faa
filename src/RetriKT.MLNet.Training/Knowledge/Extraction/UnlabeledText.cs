using System.Diagnostics;
using System.Globalization;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Knowledge.Extraction;

/// <summary>
/// Unlabelled text into a knowledge store: each text gets the teacher's soft label (its verbalizer probabilities over
/// the store's labels) and is filed under the teacher's most probable label with <see cref="KnowledgeSource.Unlabeled"/>.
/// Where a team has in-domain text but no labels for it, this is the teacher's knowledge on the inputs the student will
/// see, and it needs one teacher forward pass per text (no generation). On SST-2 with the stand-in teacher, 32,768
/// teacher-labelled sentences of critics' reviews taught the tiny student more than 4,096 generated samples per label
/// (77.6 against 76.4 % over five seeds; docs/RESULTS.md, "Twenty-seventh session"). The teacher's labels of real text
/// follow the text's own label mix, so these entries are not balanced per label.
/// </summary>
public static class UnlabeledText
{
    /// <summary>
    /// A new store: <paramref name="store"/>'s entries in their order, then each text of <paramref name="texts"/> that the
    /// store does not already hold (same first and second text), once, with the teacher's soft label. Fails with one
    /// line naming the text's index when a text is empty (or holds only characters the tokenizer drops), or when the
    /// teacher gives a text no probability distribution.
    /// </summary>
    /// <param name="store">The store to add to (left unchanged).</param>
    /// <param name="texts">The unlabelled texts (second text null for single-text tasks).</param>
    /// <param name="teacher">The teacher's label scorer over the store's labels, in the store's order (the extraction's verbalizer).</param>
    /// <param name="log">Receives one line when done (counts per label and time); may be null.</param>
    /// <param name="progress">Called after each scoring chunk with the texts scored so far and their total; may be null.</param>
    /// <param name="cancellation">Checked between scoring chunks, and handed to the scorer (the verbalizer checks it before each teacher pass).</param>
    /// <param name="scoringChunk">Texts the teacher scores per call (the progress granularity, and the cancellation granularity of a scorer that does not take the token).</param>
    public static KnowledgeStore Add(KnowledgeStore store, IReadOnlyList<(string Text, string? Text2)> texts, ILabelScorer teacher,
        Action<string>? log = null, Action<int, int>? progress = null, CancellationToken cancellation = default, int scoringChunk = 512)
    {
        ArgumentNullException.ThrowIfNull(store); ArgumentNullException.ThrowIfNull(texts); ArgumentNullException.ThrowIfNull(teacher);
        if (scoringChunk < 1) throw new ArgumentOutOfRangeException(nameof(scoringChunk), $"scoringChunk must be >= 1, found {scoringChunk}.");
        var clock = Stopwatch.StartNew();
        var seen = store.Entries.Select(e => (e.Text ?? "", e.Text2 ?? "")).ToHashSet();
        var fresh = new List<(string Text, string? Text2)>(texts.Count);
        var freshRows = new List<int>(texts.Count); // each fresh text's row in texts, which messages name
        for (int i = 0; i < texts.Count; i++)
        {
            var (text, text2) = texts[i];
            // The runtime's test, as TaskTemplate.MissingText: a text of zero-width characters is no text either.
            if (!TextTokenizingTransformer.HasWordCharacter(text))
                throw new ArgumentException($"Unlabelled text at row {i} {TaskTemplate.Emptiness(text)}; expected a text for the teacher to label.", nameof(texts));
            if (seen.Add((text, text2 ?? ""))) { fresh.Add((text, text2)); freshRows.Add(i); }
        }
        var entries = new List<KnowledgeEntry>(store.Count + fresh.Count);
        entries.AddRange(store.Entries);
        Label(fresh, teacher, store.LabelNames, KnowledgeSource.Unlabeled, scoringChunk, entries, "unlabelled text", progress, cancellation, freshRows);
        var perLabel = store.LabelNames.Select((name, l) => $"{name}: {entries.Skip(store.Count).Count(e => e.Label == l)}");
        log?.Invoke(string.Format(CultureInfo.InvariantCulture,
            "Unlabelled text: {0} texts labelled by the teacher ({1}) in {2:F0} s; {3} already in the store or repeated were left out; store {4} -> {5} entries.",
            fresh.Count, string.Join(", ", perLabel), clock.Elapsed.TotalSeconds, texts.Count - fresh.Count, store.Count, entries.Count));
        return new KnowledgeStore(store.LabelNames, entries);
    }

    /// <summary>
    /// Scores <paramref name="texts"/> with the teacher in chunks and appends each to <paramref name="entries"/> under its
    /// most probable label, with the teacher's probabilities as its soft label and fidelity, from <paramref name="source"/>.
    /// Shared by every store entry the teacher labels after the fact (variants, unlabelled text). Messages name a text by
    /// <paramref name="rows"/>[its index] when given (its row in the caller's input, before repeats were left out).
    /// </summary>
    internal static void Label(List<(string Text, string? Text2)> texts, ILabelScorer teacher, IReadOnlyList<string> labelNames, KnowledgeSource source,
        int chunkSize, List<KnowledgeEntry> entries, string what, Action<int, int>? progress, CancellationToken cancellation, IReadOnlyList<int>? rows = null)
    {
        int Row(int index) => rows?[index] ?? index;
        int labels = labelNames.Count;
        for (int start = 0; start < texts.Count; start += chunkSize)
        {
            cancellation.ThrowIfCancellationRequested();
            var chunk = texts.GetRange(start, Math.Min(chunkSize, texts.Count - start));
            float[][] probabilities;
            try
            {
                // The verbalizer looks at the token before each teacher pass: a chunk is many passes.
                probabilities = teacher.Probabilities(chunk, cancellation);
            }
            catch (ArgumentException e)
            {
                // A text the teacher cannot take (longer than its context): name the rows, not the scorer's batch position.
                throw new ArgumentException($"The teacher could not label {what} rows {Row(start)}-{Row(start + chunk.Count - 1)}: {e.Message} Shorten the texts to the teacher's context.", e);
            }
            if (probabilities.Length != chunk.Count)
                throw new InvalidOperationException($"The teacher scored {probabilities.Length} of {chunk.Count} texts ({what}).");
            for (int i = 0; i < chunk.Count; i++)
            {
                var p = probabilities[i];
                if (p.Length != labels)
                    throw new InvalidOperationException($"The teacher gave {p.Length} label probabilities for {what} {Row(start + i)}; the store has {labels} labels ({string.Join(", ", labelNames)}).");
                // Named here, by the text the scorer gave it to: the store refused it later by an index of its own entries.
                if (KnowledgeStore.SoftLabelError(p, labels) is { } error)
                    throw new InvalidOperationException($"The teacher gave {what} {Row(start + i)} the soft label [{KnowledgeStore.SoftLabelText(p)}]: {error}");
                int label = RetrievalMix.ArgMax(p);
                entries.Add(new KnowledgeEntry(chunk[i].Text, chunk[i].Text2, label, p, p[label], source));
            }
            progress?.Invoke(start + chunk.Count, texts.Count);
        }
        // Cancelled during the last chunk by a scorer that does not look at the token: not a finished store.
        cancellation.ThrowIfCancellationRequested();
    }
}
