using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// Unlabelled text into the store (<see cref="UnlabeledText"/>, <see cref="KnowledgeExtractorOptions.UnlabeledData"/>):
/// with the real SST-2 stand-in teacher on real SST-2 sentences, and through the extractor with the real stories260K
/// teacher. Each new text is labelled once, with the teacher's own soft label, under its most probable label.
/// </summary>
public sealed class UnlabeledTextTests
{
    [SharedDataFact]
    public void EachNewTextGetsTheTeachersSoftLabelOnceAndTextsAlreadyStoredAreLeftOut()
    {
        using var teacher = ShippedTeachers.Sst2();
        var scorer = new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"]);
        var sentences = ShippedTeachers.Sst2DevSentences(60);
        var store = new KnowledgeStore(["0", "1"], sentences.Take(4).Select((s, i) => KnowledgeEntry.Gold(s.Text, null, i % 2, 2)));
        // Two texts the store holds and one repeat: 3 of the 59 given are not new.
        var texts = sentences.Skip(2).Append(sentences[10]).ToList();
        var reports = new List<(int Done, int Total)>();
        var logs = new List<string>();
        var added = UnlabeledText.Add(store, texts, scorer, logs.Add, (done, total) => reports.Add((done, total)), scoringChunk: 16);

        var fresh = sentences.Skip(4).ToList();
        Assert.Equal(store.Count + fresh.Count, added.Count);
        Assert.Equal(store.Entries, added.Entries.Take(store.Count));
        var entries = added.Entries.Skip(store.Count).ToList();
        Assert.Equal(fresh.Select(s => s.Text), entries.Select(e => e.Text));
        Assert.All(entries, e => Assert.Equal(KnowledgeSource.Unlabeled, e.Source));
        var own = scorer.Probabilities(fresh);
        for (int i = 0; i < entries.Count; i++)
        {
            Assert.True(Math.Abs(own[i][0] - entries[i].SoftLabel[0]) <= 1e-5, $"entry {i}: soft label {entries[i].SoftLabel[0]:R} against the teacher's {own[i][0]:R}");
            if (Math.Abs(own[i][0] - own[i][1]) > 1e-5) Assert.Equal(own[i][0] >= own[i][1] ? 0 : 1, entries[i].Label);
            Assert.Equal(entries[i].SoftLabel[entries[i].Label], entries[i].Fidelity);
        }
        // Real dev sentences are of both kinds, and the teacher (82 % on this split) says so.
        Assert.All(new[] { 0, 1 }, l => Assert.InRange(entries.Count(e => e.Label == l), 10, 46));
        Assert.Equal([(16, 56), (32, 56), (48, 56), (56, 56)], reports);
        Assert.Contains("56 texts labelled by the teacher", Assert.Single(logs));
        Assert.Contains("3 already in the store or repeated were left out; store 4 -> 60 entries", logs[0]);

        var empty = Assert.Throws<ArgumentException>(() => UnlabeledText.Add(store, [("fine", null), ("  ", null)], scorer));
        Assert.StartsWith("Unlabelled text at row 1 is empty; expected a text for the teacher to label.", empty.Message);
        // Zero-width spaces are no text either, as UnlabeledData's rows and every other reader of texts to label have it:
        // they were labelled by the teacher and stored.
        var zeroWidth = Assert.Throws<ArgumentException>(() => UnlabeledText.Add(store, [("fine", null), ("\u200B\u200B", null)], scorer));
        Assert.StartsWith("Unlabelled text at row 1 holds only characters the tokenizer drops (control, zero-width or private-use characters, combining marks), " +
            "so it encodes as an empty one; expected a text for the teacher to label.", zeroWidth.Message);
    }

    /// <summary>
    /// The token was checked only before each scoring chunk (512 texts by default), and the teacher scored a whole chunk
    /// without it: a cancel waited for the chunk's last pass, and one during the last chunk was not seen at all (Add
    /// returned the store as if finished). Now the verbalizer checks it before each pass, and Add once more at the end.
    /// </summary>
    [SharedDataFact]
    public void ACancelStopsAtTheTeachersNextPass_NotAtTheEndOfTheChunk()
    {
        using var teacher = ShippedTeachers.Sst2();
        using var cancellation = new CancellationTokenSource();
        var scorer = new CancellingScorer(new VerbalizerClassifier(teacher, TaskTemplates.Sst2, ["0", "1"]), cancellation);
        var store = new KnowledgeStore(["0", "1"], []);
        Assert.ThrowsAny<OperationCanceledException>(() => UnlabeledText.Add(store, ShippedTeachers.Sst2DevSentences(128), scorer, cancellation: cancellation.Token));
        Assert.True(scorer.StoppedInside, $"cancelled as the chunk's scoring began, the teacher scored all 128 texts ({scorer.Seconds:F1} s)");
    }

    /// <summary>The teacher's verbalizer, cancelling as it is first called; says whether its passes then stopped.</summary>
    private sealed class CancellingScorer(VerbalizerClassifier teacher, CancellationTokenSource cancellation) : ILabelScorer
    {
        public bool StoppedInside { get; private set; }
        public double Seconds { get; private set; }

        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => Probabilities(samples, CancellationToken.None);

        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples, CancellationToken token)
        {
            cancellation.Cancel();
            var clock = System.Diagnostics.Stopwatch.StartNew();
            try { return teacher.Probabilities(samples, null, token); }
            catch (OperationCanceledException) { StoppedInside = true; throw; }
            finally { Seconds = clock.Elapsed.TotalSeconds; }
        }
    }

    /// <summary>
    /// A user's scorer that gives some text no probability distribution (here a lexicon scorer dividing by the lexicon
    /// words it found: a sentence with none gives 0 / 0) had its NaN stored as the entry's soft label, and the store
    /// refused it afterwards as "Entry 0: soft label holds NaN", an index of the store being built. It is now refused
    /// where the scorer gave it, naming the text's row and the values, in the shared labelling of unlabelled text and
    /// variants. The row is the caller's: a repeated text left out before it does not shift it (it did, and so did the
    /// rows named for a text longer than the teacher's context, which share the numbering).
    /// </summary>
    [SharedDataFact]
    public void ASoftLabelThatIsNoDistributionIsRefusedWhereTheScorerGaveIt()
    {
        var sentences = ShippedTeachers.Sst2DevSentences(40);
        var scorer = new LexiconScorer();
        int first = sentences.FindIndex(s => float.IsNaN(scorer.Probabilities([s])[0][0]));
        Assert.True(first >= 0, "precondition: a dev sentence holds none of the lexicon's words");
        var store = new KnowledgeStore(["0", "1"], []);

        (string, string?) repeated = ("a good and fun film", null);
        var e = Assert.Throws<InvalidOperationException>(() => UnlabeledText.Add(store, [repeated, repeated, .. sentences], scorer));
        Assert.Equal($"The teacher gave unlabelled text {first + 2} the soft label [NaN, NaN]: soft label holds NaN; probabilities must be finite and >= 0.", e.Message);
    }

    /// <summary>A label scorer as a user might write one: the share of a small lexicon's negative and positive words in the text.</summary>
    private sealed class LexiconScorer : ILabelScorer
    {
        private static readonly string[] Negative = ["bad", "dull", "boring", "worst", "mess", "fails", "tedious", "stupid"];
        private static readonly string[] Positive = ["good", "great", "best", "fun", "charming", "beautiful", "funny", "love"];

        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => samples.Select(s =>
        {
            var words = s.Text.Split(' ');
            float negative = words.Count(Negative.Contains), positive = words.Count(Positive.Contains);
            return new[] { negative / (negative + positive), positive / (negative + positive) };
        }).ToArray();
    }

    [SharedDataFact]
    public void TheExtractorLabelsUnlabelledRowsAsItsTransformDoesAndNamesAMissingColumn()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood,
            SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 4,
        }).Fit(data);
        var stories = new[]
        {
            "Sam found a shiny stone by the river and showed it to his dad.", "The cat sat in the rain and no one let her in.",
            "Lily was very happy. She played with her ball in the sun.", "Max and Zoe built a big sand castle at the beach.",
        };
        var unlabeled = mlContext.Data.LoadFromEnumerable(stories.Select(s => new TextPairRow { Text = s }));
        // Nothing generated: the store is the few-shot examples and the unlabelled rows (one of which is a few-shot text).
        var extracted = mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 0, UnlabeledData = unlabeled, Seed = 9,
        }).Fit(data);

        var fewShot = extracted.Store.Entries.Where(e => e.Source == KnowledgeSource.FewShot).ToList();
        var added = extracted.Store.Entries.Where(e => e.Source == KnowledgeSource.Unlabeled).ToList();
        Assert.Equal(extracted.Store.Count, fewShot.Count + added.Count);
        Assert.Equal(stories.Where((_, i) => i != 2), added.Select(e => e.Text));
        Assert.Equal(3, extracted.Report!.Unlabeled);
        Assert.Contains("unlabelled rows labelled by the teacher 3", extracted.Report.ToString());
        // Nothing was generated, so the report measures no generated sample: it printed "mean fidelity 0.000, generated
        // with the intended teacher label 0.0 %" (and distinct-1 1.000), numbers that read as a teacher that ignores the labels.
        Assert.StartsWith("generated 0; few-shot 8; unlabelled rows labelled by the teacher 3", extracted.Report.ToString());
        // The same labelling as the extractor's Transform gives any row.
        var transformed = mlContext.Data.CreateEnumerable<SoftLabelRow>(extracted.Transform(unlabeled), reuseRowObject: false).ToList();
        foreach (var e in added)
        {
            var row = transformed.Single(r => r.Text == e.Text);
            Assert.True(Math.Abs(row.SoftLabel[0] - e.SoftLabel[0]) <= 1e-5, $"'{e.Text}': {e.SoftLabel[0]:R} against Transform's {row.SoftLabel[0]:R}");
            Assert.Equal(Array.IndexOf(e.SoftLabel, e.SoftLabel.Max()), e.Label);
        }

        var wrong = mlContext.Data.LoadFromEnumerable(stories.Select(s => new { Sentence = s }));
        var missing = Assert.Throws<ArgumentOutOfRangeException>(() => mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 0, UnlabeledData = wrong,
        }).Fit(data));
        // The extractor's own check, prefixed: the data's columns are listed as for the few-shot data.
        Assert.Equal("UnlabeledData: column 'Text' (String) is needed by template 'StoryMood'; found no such column. Columns: 'Sentence'.", missing.Message);

        // A row longer than the teacher's context is named by its rows, not by the scorer's batch position.
        var tooLong = mlContext.Data.LoadFromEnumerable(new[] { stories[0], string.Join(' ', Enumerable.Repeat("Sam ran to the park.", 300)) }
            .Select(s => new TextPairRow { Text = s }));
        var refused = Assert.Throws<ArgumentException>(() => mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 0, UnlabeledData = tooLong,
        }).Fit(data));
        Assert.StartsWith("The teacher could not label unlabelled text rows 0-1: ", refused.Message);
        Assert.EndsWith("Shorten the texts to the teacher's context.", refused.Message);
    }

    private sealed class SoftLabelRow
    {
        public string Text { get; set; } = "";
        public float[] SoftLabel { get; set; } = [];
    }
}
