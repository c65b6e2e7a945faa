using Microsoft.ML;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// An extraction checkpoint carries the fingerprint of the run that wrote it: another run's checkpoint (other soft
/// prompts, other seed, or one without a fingerprint) stops the extraction with a message naming the file and what
/// differs, or is moved aside when the caller asks to start fresh; it is never reused silently.
/// </summary>
public class ExtractionCheckpointTests
{
    private static KnowledgeExtractorOptions Options(SoftPromptTransformer prompts, string? checkpoint, int seed, bool startFresh = false) => new()
    {
        SoftPrompts = prompts, SamplesPerLabel = 3, BatchSize = 3, MaxAttemptsFactor = 2, FidelityThreshold = 0.0, RequireArgmax = false,
        MinWords = 1, CheckpointPath = checkpoint, Seed = seed, StartFreshOnCheckpointMismatch = startFresh,
    };

    private static SoftPromptTransformer Prompts(MLContext mlContext, int seed) => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
    {
        TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood,
        SupervisedEpochs = 2, PpoSteps = 0, PromptTokens = 2, Seed = seed,
    }).Fit(SoftPromptPpoTrainerTests.StoryData(mlContext));

    // The extractor transformers share the prompts given to them and leave them to the caller: only the prompts are disposed.

    private static bool IsDone(string line) => line.Contains("\"done\"", StringComparison.Ordinal);
    private static bool IsSample(string line) => line.Contains("\"text\"", StringComparison.Ordinal);

    /// <summary>
    /// An extraction of the story task with a checkpoint, run once whole (<see cref="Whole"/>, <see cref="Lines"/>): the
    /// resume tests damage the file as a kill or a disk would, then <see cref="Extract"/> again with the same settings.
    /// </summary>
    private sealed class CheckpointedRun : IDisposable
    {
        private readonly IDataView _data;
        private readonly SoftPromptTransformer _prompts;
        private readonly TempDir _folder;

        public CheckpointedRun(string name)
        {
            MLContext.Log += (_, e) => { if (e.Kind == Microsoft.ML.Runtime.ChannelMessageKind.Warning) lock (Warnings) Warnings.Add(e.RawMessage); };
            _data = SoftPromptPpoTrainerTests.StoryData(MLContext);
            _prompts = Prompts(MLContext, seed: 1);
            _folder = new TempDir($"retrikt-{name}-");
            Checkpoint = _folder.File("extraction.jsonl");
            Whole = Extract();
            Lines = File.ReadAllLines(Checkpoint);
            Assert.True(Batches >= 2, $"{Batches} batches");
        }

        public MLContext MLContext { get; } = new(seed: 2);
        public List<string> Warnings { get; } = [];
        public string Checkpoint { get; }
        public KnowledgeExtractorTransformer Whole { get; }
        /// <summary>The uninterrupted run's checkpoint lines.</summary>
        public string[] Lines { get; }
        public int Batches => Lines.Count(IsDone);

        public KnowledgeExtractorTransformer Extract() => MLContext.RetriKT().KnowledgeExtractor(Options(_prompts, Checkpoint, seed: 9)).Fit(_data);

        public void Dispose()
        {
            _prompts.Dispose();
            _folder.Dispose();
        }
    }
    [SharedDataFact]
    public void AnotherRunsCheckpointStopsTheExtractionOrIsMovedAsideOnRequest()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = Prompts(mlContext, seed: 1);
        using var otherPrompts = Prompts(mlContext, seed: 2);
        using var folder = new TempDir("retrikt-fingerprint-");
        var checkpoint = folder.File("extraction.jsonl");
        var written = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data);
        Assert.Contains("\"fingerprint\"", File.ReadLines(checkpoint).First());
        Assert.True(written.Store.Count > 8);

        // Same run: resumes from every batch.
        var resumed = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data);
        Assert.True(resumed.Report!.ResumedBatches >= 2, $"resumed {resumed.Report.ResumedBatches} batches");

        // Another seed, other soft prompts: an error naming the file and what differs; the file is left as it was.
        var before = File.ReadAllText(checkpoint);
        var seedError = Assert.Throws<InvalidDataException>(() => mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 10)).Fit(data));
        Assert.Contains(checkpoint, seedError.Message);
        Assert.Contains("seed: checkpoint 9, this run 10", seedError.Message);
        var promptsError = Assert.Throws<InvalidDataException>(() => mlContext.RetriKT().KnowledgeExtractor(Options(otherPrompts, checkpoint, seed: 9)).Fit(data));
        Assert.Contains("soft_prompts: checkpoint", promptsError.Message);
        Assert.DoesNotContain("teacher:", promptsError.Message); // same teacher: only what differs is named
        Assert.Equal(before, File.ReadAllText(checkpoint));

        // A checkpoint without a fingerprint (an older version's) is not trusted either.
        var legacy = checkpoint + ".legacy.jsonl";
        File.WriteAllLines(legacy, File.ReadLines(checkpoint).Skip(1));
        var legacyError = Assert.Throws<InvalidDataException>(() => mlContext.RetriKT().KnowledgeExtractor(Options(prompts, legacy, seed: 9)).Fit(data));
        Assert.Contains("no fingerprint", legacyError.Message);

        // Asked to start fresh: the old file is moved aside and the result is that of a run without a checkpoint.
        var fresh = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 10, startFresh: true)).Fit(data);
        var reference = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, null, seed: 10)).Fit(data);
        Assert.Equal(0, fresh.Report!.ResumedBatches);
        Assert.Equal(reference.Store.Entries.Select(e => e.Text), fresh.Store.Entries.Select(e => e.Text));
        Assert.Equal(before, File.ReadAllText(checkpoint + ".mismatched"));
        Assert.Contains("\"seed\":10", File.ReadLines(checkpoint).First());

        // Back to the first seed, starting fresh again: the seed-10 checkpoint is moved aside under a name of its own. It was
        // moved over the seed-9 one, which was lost without a word.
        var tenth = File.ReadAllText(checkpoint);
        mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9, startFresh: true)).Fit(data);
        Assert.Equal(before, File.ReadAllText(checkpoint + ".mismatched"));
        Assert.Equal(tenth, File.ReadAllText(checkpoint + ".mismatched.2"));
    }

    [SharedDataFact]
    public void AResumedRunTakesTheFluencyScoresFromTheCheckpointAndOnlyFromTheSameMeasure()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = Prompts(mlContext, seed: 1);
        using var folder = new TempDir("retrikt-fluency-");
        var checkpoint = folder.File("extraction.jsonl");
        var first = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data);
        Assert.True(first.Report!.Times!.Fluency > TimeSpan.Zero);
        int batches = File.ReadLines(checkpoint).Count(IsDone);
        Assert.Equal(batches, File.ReadLines(checkpoint).Count(l => l.Contains($"\"fluency\":\"{FluencyFilter.Version}\"", StringComparison.Ordinal)));

        // Resumed: no batch is scored again, and the store is the one the first run kept.
        var resumed = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data);
        Assert.Equal(TimeSpan.Zero, resumed.Report!.Times!.Fluency);
        Assert.Equal(first.Store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));

        // Scores written under another measure's name are not trusted: they are computed again, to the same store.
        File.WriteAllLines(checkpoint, File.ReadLines(checkpoint)
            .Select(l => l.Replace($"\"fluency\":\"{FluencyFilter.Version}\"", "\"fluency\":\"another-measure\"", StringComparison.Ordinal)).ToList());
        var remeasured = mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data);
        Assert.True(remeasured.Report!.Times!.Fluency > TimeSpan.Zero);
        Assert.Equal(first.Store.Entries.Select(e => e.Text), remeasured.Store.Entries.Select(e => e.Text));
    }

    /// <summary>
    /// A run killed while it wrote a line leaves that line torn. The resumed run cuts it before appending; it used to
    /// skip it on reading and append its own batches after the torn bytes, gluing its first line to them, so every later
    /// resume stopped reading at that line and generated again everything the resumed run had done.
    /// </summary>
    [SharedDataFact]
    public void ALineTornByAKillIsCutSoTheNextResumeKeepsWhatTheResumedRunAdded()
    {
        using var run = new CheckpointedRun("torn");
        var lines = run.Lines;

        // Killed while writing the second batch's first sample: the first batch is done, the next line is half there.
        int firstDone = Array.FindIndex(lines, IsDone);
        int next = Array.FindIndex(lines, firstDone + 1, IsSample);
        File.WriteAllText(run.Checkpoint, string.Concat(lines.Take(next).Select(l => l + "\n")) + lines[next][..(lines[next].Length / 2)]);

        var resumed = run.Extract();
        Assert.Equal(1, resumed.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));
        Assert.All(File.ReadLines(run.Checkpoint), l => System.Text.Json.Nodes.JsonNode.Parse(l));

        // Everything the resumed run added is taken the next time: nothing is generated again.
        var again = run.Extract();
        Assert.Equal(run.Batches, again.Report!.ResumedBatches);
        Assert.Equal(TimeSpan.Zero, again.Report.Times!.Generation);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), again.Store.Entries.Select(e => e.Text));
    }

    /// <summary>
    /// A run killed during its first write left the fingerprint line torn, and the next run refused the file as another
    /// run's ("line 1 holds no fingerprint: written by an older version or another tool"), asking the user to delete it.
    /// No batch was finished in it: the run now starts the file afresh, as it does after any other torn last line.
    /// </summary>
    [SharedDataFact]
    public void AFingerprintLineTornByAKillStartsTheCheckpointAfresh()
    {
        using var run = new CheckpointedRun("torn-fingerprint");
        File.WriteAllText(run.Checkpoint, run.Lines[0][..(run.Lines[0].Length / 2)]);

        var resumed = run.Extract();
        Assert.Equal(0, resumed.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));
        Assert.Equal(run.Lines, File.ReadAllLines(run.Checkpoint));
    }

    /// <summary>
    /// A run killed after writing some of a batch's lines whole, before its "done" line, left those lines in the file. The
    /// resumed run generated the batch again and appended all of it, so the next resume read the batch with the first
    /// run's lines in it too (its samples twice). The unfinished batch's lines are now cut when a run resumes.
    /// </summary>
    [SharedDataFact]
    public void ABatchLeftUnfinishedByAKillIsCutSoTheNextResumeReadsItOnce()
    {
        using var run = new CheckpointedRun("unfinished");
        var lines = run.Lines;

        // Killed while writing the last batch: its first sample line is whole, the rest and its "done" line never came.
        int lastDone = Array.FindLastIndex(lines, IsDone);
        int previousDone = Array.FindLastIndex(lines, lastDone - 1, IsDone);
        int firstOfLast = Array.FindIndex(lines, previousDone + 1, IsSample);
        Assert.True(lastDone - firstOfLast > 1, "the last batch has more than one sample line");
        File.WriteAllLines(run.Checkpoint, lines.Take(firstOfLast + 1));

        var resumed = run.Extract();
        Assert.Equal(run.Batches - 1, resumed.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));

        // The next resume reads every batch once, as the uninterrupted run made it.
        var again = run.Extract();
        Assert.Equal(run.Batches, again.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), again.Store.Entries.Select(e => e.Text));
        Assert.Equal(run.Whole.Report!.Kept, again.Report.Kept);
        Assert.Equal(run.Whole.Report.Generated, again.Report.Generated);
        Assert.Equal(lines.Count(IsSample), File.ReadLines(run.Checkpoint).Count(IsSample));
    }

    /// <summary>
    /// A line that is not JSON inside the file (a kill under a version that did not cut torn lines glued the resumed
    /// run's first line to the torn one) made every resume stop reading there, so everything after it was generated again
    /// each time, without a word. The file is now cut before it, with a warning naming the line, and the run's own
    /// batches are read by the next resume.
    /// </summary>
    [SharedDataFact]
    public void ALineDamagedInsideTheFileIsNamedAndCutSoTheNextResumeKeepsWhatFollows()
    {
        using var run = new CheckpointedRun("damaged");
        var lines = run.Lines.ToArray();
        int firstDone = Array.FindIndex(lines, IsDone);
        lines[firstDone + 1] = lines[firstDone + 1][..10] + lines[firstDone + 1];
        File.WriteAllLines(run.Checkpoint, lines);

        var resumed = run.Extract();
        Assert.Equal(1, resumed.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), resumed.Store.Entries.Select(e => e.Text));
        Assert.Contains(run.Warnings, w => w.Contains($"{run.Checkpoint} line {firstDone + 2}: not JSON", StringComparison.Ordinal));

        var again = run.Extract();
        Assert.Equal(run.Batches, again.Report!.ResumedBatches);
        Assert.Equal(run.Whole.Store.Entries.Select(e => e.Text), again.Store.Entries.Select(e => e.Text));
    }

    /// <summary>
    /// A second run on the checkpoint of a run still going (a retried job while the first still runs) appended its batches
    /// beside the first run's, interleaving their lines. It is now refused in one line while the first run holds the
    /// checkpoint's lock, as a black-box run is; the first run goes on undisturbed and releases the lock when it ends.
    /// </summary>
    [SharedDataFact]
    public async Task ASecondRunOnTheCheckpointOfARunStillGoingIsRefused()
    {
        var mlContext = new MLContext(seed: 2);
        var data = SoftPromptPpoTrainerTests.StoryData(mlContext);
        using var prompts = Prompts(mlContext, seed: 1);
        using var folder = new TempDir("retrikt-locked-");
        var checkpoint = folder.File("extraction.jsonl");
        var longer = Options(prompts, checkpoint, seed: 9);
        longer.SamplesPerLabel = 300; // seconds of generation: the second run starts well before the first ends
        var first = Task.Run(() => new MLContext(seed: 2).RetriKT().KnowledgeExtractor(longer).Fit(SoftPromptPpoTrainerTests.StoryData(new MLContext(seed: 2))));
        var deadline = DateTime.UtcNow.AddSeconds(60);
        while (!File.Exists(checkpoint + ".lock") && !first.IsCompleted && DateTime.UtcNow < deadline) await Task.Delay(10);
        Assert.True(File.Exists(checkpoint + ".lock"), "the first run holds the checkpoint's lock");

        var second = Assert.Throws<InvalidOperationException>(() => mlContext.RetriKT().KnowledgeExtractor(Options(prompts, checkpoint, seed: 9)).Fit(data));
        Assert.Equal($"{checkpoint}: another extraction run is using this checkpoint (it holds {checkpoint}.lock); wait for it to end, or give this run another CheckpointPath.", second.Message);
        Assert.False(first.IsCompleted, "the second run was refused while the first still ran");

        var finished = await first;
        Assert.False(File.Exists(checkpoint + ".lock"));
        var again = mlContext.RetriKT().KnowledgeExtractor(longer).Fit(data);
        Assert.Equal(File.ReadLines(checkpoint).Count(IsDone), again.Report!.ResumedBatches);
        Assert.Equal(TimeSpan.Zero, again.Report.Times!.Generation);
        Assert.Equal(finished.Store.Entries.Select(e => e.Text), again.Store.Entries.Select(e => e.Text));
    }

    /// <summary>
    /// A record that parses but lacks a field (edited by hand, written by something else) failed with a bare
    /// NullReferenceException naming nothing; it now fails in one line naming the file, the line and the field.
    /// </summary>
    [SharedDataFact]
    public void ARecordWithoutAFieldIsNamedByFileLineAndField()
    {
        using var run = new CheckpointedRun("field");
        var lines = run.Lines.ToArray();
        int sample = Array.FindIndex(lines, IsSample);
        var record = System.Text.Json.Nodes.JsonNode.Parse(lines[sample])!.AsObject();
        record.Remove("generated");
        lines[sample] = record.ToJsonString();
        File.WriteAllLines(run.Checkpoint, lines);

        var e = Assert.Throws<InvalidDataException>(() => run.Extract());
        Assert.Equal($"{run.Checkpoint} line {sample + 1}: field 'generated' is missing; not an extraction checkpoint record. Delete the file to start afresh.", e.Message);
    }

    /// <summary>
    /// A soft label in the checkpoint that is no probability distribution (edited by hand, written by a broken teacher)
    /// was taken as it stood: the run failed only at its end, in the store's constructor, naming an index of the store
    /// ("Entry 8: soft label sums to 1.4"), and not at all when the filters dropped the sample. It now fails as the
    /// checkpoint is read, in one line naming the file, the line and what is wrong.
    /// </summary>
    [SharedDataFact]
    public void ASoftLabelThatIsNoDistributionIsNamedByFileAndLine()
    {
        using var run = new CheckpointedRun("soft-label");
        var lines = run.Lines.ToArray();
        int sample = Array.FindIndex(lines, IsSample);
        var record = System.Text.Json.Nodes.JsonNode.Parse(lines[sample])!.AsObject();
        record["soft_label"] = new System.Text.Json.Nodes.JsonArray(0.7f, 0.7f);
        lines[sample] = record.ToJsonString();
        File.WriteAllLines(run.Checkpoint, lines);

        var e = Assert.Throws<InvalidDataException>(() => run.Extract());
        Assert.Equal($"{run.Checkpoint} line {sample + 1}: soft label sums to 1.4, expected 1. Delete the file to start afresh.", e.Message);
    }
}
