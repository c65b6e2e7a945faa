using System.Text.Json;
using Microsoft.ML;
using RetriKT.MLNet.Common;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.Teacher;

/// <summary>
/// Resumable, fingerprinted pretraining checkpoints and the weighted loss of continued pretraining on a task (the
/// recipe of the harness's stand-in teacher), on real movie-review text.
/// </summary>
public sealed class PretrainingResumeTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-resume-");
    private string Temp => _folder.Path;

    public void Dispose() => _folder.Dispose();

    private (TeacherModel Model, int[] Tokens) Fresh(List<string> texts)
    {
        var tokenizerDir = Path.Combine(Temp, "tok");
        var tokenizer = Directory.Exists(tokenizerDir) ? TeacherTokenizer.Load(tokenizerDir) : ByteLevelBpeTrainer.Train(texts.Take(60), 400, tokenizerDir);
        var config = new TeacherConfig { ModelType = "llama", VocabSize = 400, HiddenSize = 32, IntermediateSize = 64, NumLayers = 1, NumHeads = 2,
            NumKeyValueHeads = 2, HeadDim = 16, MaxPositions = 64, TieWordEmbeddings = true, BosTokenId = tokenizer.BosId, EosTokenIds = [tokenizer.EosId!.Value] };
        return (TeacherModel.Create(config, tokenizer, seed: 1), TeacherPretrainer.TokenStream(tokenizer, texts));
    }

    private static TeacherPretrainerOptions Options(string? checkpoints, int steps = 12) => new()
    {
        Steps = steps, BatchSize = 4, SequenceLength = 32, LearningRate = 3e-3, WarmupSteps = 2, CheckpointDirectory = checkpoints, CheckpointEvery = 4,
    };

    /// <summary>A fresh model trained with <paramref name="options"/> until it is cancelled after step 6 (its last checkpoint: step 4).</summary>
    private void Interrupted(List<string> texts, int[] tokens, TeacherPretrainerOptions options)
    {
        var (model, _) = Fresh(texts);
        using (model)
        {
            using var cts = new CancellationTokenSource();
            var progress = new SyncProgress(p => { if (p.Step == 6) cts.Cancel(); });
            Assert.ThrowsAny<OperationCanceledException>(() => new TeacherPretrainer(new MLContext(seed: 1), options).Train(model, tokens, progress, cts.Token));
        }
    }

    /// <summary>
    /// Two runs in one checkpoint folder each overwrote the other's checkpoints (and the second cleared the first one's
    /// save in progress as a stopped one); nothing stopped the second. A run now holds the folder's lock file while it
    /// trains: a second fails at once naming the first, and runs once the first has let go.
    /// </summary>
    [SharedDataFact]
    public void ASecondRunInTheSameCheckpointFolderFailsNamingTheFirst()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var dir = Path.Combine(Temp, "ckpt");
        var (first, tokens) = Fresh(texts);
        var (second, _) = Fresh(texts);
        using (first)
        using (second)
        {
            using var atStep2 = new ManualResetEventSlim();
            using var goOn = new ManualResetEventSlim();
            var progress = new SyncProgress(p => { if (p.Step == 2) { atStep2.Set(); goOn.Wait(); } });
            var running = Task.Run(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(first, tokens, progress));
            Assert.True(atStep2.Wait(TimeSpan.FromMinutes(1)), "the first run never reached step 2");
            var refused = Assert.Throws<IOException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(second, tokens));
            Assert.StartsWith($"Another pretraining run (pid {Environment.ProcessId}, since ", refused.Message);
            Assert.EndsWith($"is writing checkpoints in {dir}; two runs there would overwrite each other's checkpoints. Wait for it to finish, " +
                            "or give this run another TeacherPretrainerOptions.CheckpointDirectory.", refused.Message);
            goOn.Set();
            running.GetAwaiter().GetResult();
            Assert.False(File.Exists(Path.Combine(dir, TeacherPretrainer.LockFileName + ".owner")));
            new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(second, tokens); // the finished run's checkpoint: nothing left to train
            Assert.Equal(first.ContentHash, second.ContentHash);
        }
    }

    [SharedDataFact]
    public void AKilledRunResumesFromItsLastCheckpointAndEndsWithTheSameWeights()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        // Uninterrupted reference.
        var (reference, tokens) = Fresh(texts);
        using (reference)
        {
            new TeacherPretrainer(new MLContext(seed: 1), Options(null)).Train(reference, tokens);
            string expected = reference.ContentHash;

            // Cancelled after step 6 (checkpoint at step 4), then resumed by a new process-like run with a fresh model.
            var dir = Path.Combine(Temp, "ckpt");
            Interrupted(texts, tokens, Options(dir));
            var (second, _) = Fresh(texts);
            using (second)
            {
                var steps = new List<long>();
                new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(second, tokens, new SyncProgress(p => steps.Add(p.Step)));
                Assert.Equal(5, steps[0]); // resumed after the step-4 checkpoint
                Assert.Equal(expected, second.ContentHash);
            }

            // The checkpoint of this run is refused by a run with other options, naming the folder.
            var (third, _) = Fresh(texts);
            using (third)
            {
                var e = Assert.Throws<InvalidOperationException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir, steps: 20)).Train(third, tokens));
                Assert.Contains(dir, e.Message);
                Assert.Contains("different pretraining run", e.Message);
            }
        }
    }

    /// <summary>
    /// The fingerprint a progress file carries keeps its value: a run resumes only from a checkpoint whose fingerprint it
    /// computes again, so another way of computing it would refuse every checkpoint written before. Pinned with the
    /// corpus summary a refusal compares, for a plain run and for a weighted one with dropout (a field added later).
    /// </summary>
    [SharedDataFact]
    public void AProgressFileKeepsTheFingerprintAndCorpusSummaryOfEarlierVersions()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        string Written(string name, Action<TeacherPretrainerOptions> change, bool weighted)
        {
            var dir = Path.Combine(Temp, name);
            var (model, tokens) = Fresh(texts);
            using (model)
            {
                var options = Options(dir, steps: 4);
                change(options);
                float[]? weights = weighted ? tokens.Select((_, i) => i % 3 == 0 ? 2f : 1f).ToArray() : null;
                new TeacherPretrainer(new MLContext(seed: 1), options).Train(model, tokens, weights);
            }
            using var progress = JsonDocument.Parse(File.ReadAllText(Path.Combine(dir, "pretrain-progress.json")));
            return string.Join(" | ", new[] { "Fingerprint", "Corpus", "StartingWeights" }.Select(p => progress.RootElement.GetProperty(p).GetString()));
        }
        Assert.Equal("5d4fa9fb90be61de85f9bad94781f2039ac479dacec493c6d449a14ab50470fe | 161611 tokens, sha256 c8a38701b7ae | 62713cb7eb1fd27aee0c86f7dd3032e663f7b9404cb19675d5be60f65138e9a1",
            Written("plain", _ => { }, weighted: false));
        Assert.Equal("917888064ea63d2acff0a0d411a682390c71feaa2bc2b750efbf558236f8f3a3 | 161611 tokens, weighted, sha256 c3ef9b7c9270 | 62713cb7eb1fd27aee0c86f7dd3032e663f7b9404cb19675d5be60f65138e9a1",
            Written("weighted", o => o.Dropout = 0.2, weighted: true));
    }

    /// <summary>
    /// The weights and optimizer state of step 8 beside the progress file of step 4 (what a kill inside a save left before
    /// saves were written beside the checkpoint and moved in; now files changed by hand): resuming would train steps 5..
    /// again on step 8's weights (a silent mix). It is refused, naming the folder, and Resume = false starts over.
    /// </summary>
    [SharedDataFact]
    public void ACheckpointWhoseWeightsAreAheadOfItsProgressFileIsRefused()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var dir = Path.Combine(Temp, "ckpt-torn");
        var progressFile = Path.Combine(dir, "pretrain-progress.json");
        var (first, tokens) = Fresh(texts);
        string? stepFour = null;
        using (first)
        {
            using var cts = new CancellationTokenSource();
            var progress = new SyncProgress(p =>
            {
                if (p.Step == 5) stepFour = File.ReadAllText(progressFile); // the step-4 checkpoint is complete
                if (p.Step == 10) cts.Cancel();                              // the step-8 one too
            });
            Assert.ThrowsAny<OperationCanceledException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(first, tokens, progress, cts.Token));
        }
        Assert.Contains("\"Step\":4", stepFour);
        File.WriteAllText(progressFile, stepFour);

        var (second, _) = Fresh(texts);
        using (second)
        {
            var e = Assert.Throws<InvalidDataException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(second, tokens));
            Assert.Contains(dir, e.Message);
            Assert.Contains("not the ones of step 4", e.Message);
        }
        var (restart, _) = Fresh(texts);
        using (restart)
        {
            var resumeOff = Options(dir);
            resumeOff.Resume = false;
            new TeacherPretrainer(new MLContext(seed: 1), resumeOff).Train(restart, tokens);
        }

        // A truncated optimizer file is refused the same way, not read as a shorter state.
        var optimizerFile = Path.Combine(dir, "pretrain-optimizer.bin");
        var bytes = File.ReadAllBytes(optimizerFile);
        File.WriteAllBytes(optimizerFile, bytes[..(bytes.Length / 2)]);
        var (third, _) = Fresh(texts);
        using (third)
        {
            var e = Assert.Throws<InvalidDataException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(third, tokens));
            Assert.Contains(optimizerFile, e.Message);
        }

        // A progress file without a fingerprint is not a progress file: one clear line, not a NullReferenceException.
        File.WriteAllText(progressFile, "{}");
        var (fourth, _) = Fresh(texts);
        using (fourth)
        {
            var e = Assert.Throws<InvalidDataException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(fourth, tokens));
            Assert.Contains("not a pretraining progress file", e.Message);
        }
    }

    /// <summary>
    /// A checkpoint save wrote its files over the previous checkpoint's one by one, so a save stopped inside it (a kill, a
    /// full disk; the weights and the optimizer state take most of its time) left a folder the resume refused: the run lost
    /// all its progress. A save now writes the whole checkpoint beside the previous one, then moves it in. One stopped while
    /// it moved (here a folder stood where the optimizer state goes) is finished by the resume; one stopped while it wrote
    /// (a next checkpoint without its progress file) is discarded, the previous checkpoint being whole. Both runs end with
    /// the weights of an uninterrupted one.
    /// </summary>
    [SharedDataFact]
    public void ACheckpointSaveStoppedHalfWayResumesFromAWholeCheckpoint()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var (reference, tokens) = Fresh(texts);
        string expected;
        using (reference)
        {
            new TeacherPretrainer(new MLContext(seed: 1), Options(null)).Train(reference, tokens);
            expected = reference.ContentHash;
        }
        void ResumesAt(string dir, int firstStep)
        {
            var (model, _) = Fresh(texts);
            using (model)
            {
                var steps = new List<long>();
                new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(model, tokens, new SyncProgress(p => steps.Add(p.Step)));
                Assert.Equal(firstStep, steps[0]);
                Assert.Equal(expected, model.ContentHash);
            }
            Assert.False(Directory.Exists(Path.Combine(dir, PretrainingResume.NextCheckpointFolder)));
            Assert.False(File.Exists(Path.Combine(dir, "retrikt-save-unfinished.txt")));
            using var last = TeacherModel.Load(dir);
            Assert.Equal(expected, last.ContentHash);
        }

        // Stopped while it moved the step-8 checkpoint in.
        var moving = Path.Combine(Temp, "ckpt-stopped-moving");
        var optimizerFile = Path.Combine(moving, "pretrain-optimizer.bin");
        var (first, _) = Fresh(texts);
        using (first)
        {
            var progress = new SyncProgress(p =>
            {
                if (p.Step != 8) return;
                File.Delete(optimizerFile);
                Directory.CreateDirectory(optimizerFile);
                File.WriteAllText(Path.Combine(optimizerFile, "in-the-way.txt"), "");
            });
            Assert.ThrowsAny<IOException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(moving)).Train(first, tokens, progress));
        }
        Directory.Delete(optimizerFile, recursive: true);
        ResumesAt(moving, firstStep: 9);

        // Stopped while it wrote the step-8 checkpoint: what a kill inside the weights' write leaves.
        var writing = Path.Combine(Temp, "ckpt-stopped-writing");
        Interrupted(texts, tokens, Options(writing));
        var next = Path.Combine(writing, PretrainingResume.NextCheckpointFolder);
        Directory.CreateDirectory(next);
        File.WriteAllText(Path.Combine(next, "retrikt-save-unfinished.txt"), "A save into this folder started and has not finished.");
        File.WriteAllBytes(Path.Combine(next, "model.safetensors.0a1b2c3d.tmp"), new byte[4096]);
        ResumesAt(writing, firstStep: 5);
    }

    /// <summary>
    /// A checkpoint of a run with other settings was refused with two hashes ("fingerprint X, this run Y: options, corpus
    /// or starting weights differ"), leaving the user to guess which of a dozen options, the corpus or the weights
    /// changed. The refusal now names each setting that differs with both values (and the corpus or weights).
    /// </summary>
    [SharedDataFact]
    public void ACheckpointOfARunWithOtherSettingsIsRefusedNamingEachDifference()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var dir = Path.Combine(Temp, "ckpt-settings");
        var (unused, tokens) = Fresh(texts);
        unused.Dispose();
        Interrupted(texts, tokens, Options(dir));
        var (second, _) = Fresh(texts);
        using (second)
        {
            var longer = Options(dir, steps: 20);
            longer.LearningRate = 1e-3;
            var e = Assert.Throws<InvalidOperationException>(() => new TeacherPretrainer(new MLContext(seed: 1), longer).Train(second, tokens));
            Assert.Equal($"{Path.Combine(dir, "pretrain-progress.json")}: the checkpoint in {dir} was written by a different pretraining run " +
                         "(Steps: checkpoint 12, this run 20; LearningRate: checkpoint 0.003, this run 0.001). Delete the folder or set Resume = false to start over.", e.Message);
            var fewer = tokens.Take(tokens.Length - 10).ToArray();
            var c = Assert.Throws<InvalidOperationException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(dir)).Train(second, fewer));
            Assert.Contains($"corpus: checkpoint {tokens.Length} tokens, sha256 ", c.Message);
            Assert.Contains($", this run {fewer.Length} tokens, sha256 ", c.Message);
        }
    }

    /// <summary>
    /// Without Options.Seed the windows are drawn from the MLContext seed: a checkpoint of a run under another
    /// MLContext seed is another run, and is refused rather than continued with other windows.
    /// </summary>
    [SharedDataFact]
    public void ACheckpointOfARunUnderAnotherMLContextSeedIsRefused()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var dir = Path.Combine(Temp, "ckpt-seed");
        var (unused, tokens) = Fresh(texts);
        unused.Dispose();
        Interrupted(texts, tokens, Options(dir));
        var (second, _) = Fresh(texts);
        using (second)
        {
            var e = Assert.Throws<InvalidOperationException>(() => new TeacherPretrainer(new MLContext(seed: 2), Options(dir)).Train(second, tokens));
            Assert.Contains("different pretraining run", e.Message);
            // The same seed given as the option is the same run.
            var explicitSeed = Options(dir);
            explicitSeed.Seed = 1;
            new TeacherPretrainer(new MLContext(seed: 2), explicitSeed).Train(second, tokens);
        }
    }

    /// <summary>
    /// Only the loss was checked: at LearningRate 100 the loss read ln(400), finite, at step 13 while its gradient was
    /// NaN; the update made every embedding weight NaN, the step's checkpoint held them, and the run stopped only at
    /// step 14's NaN loss, leaving a checkpoint the load refuses ("the checkpoint is damaged"): nothing could resume.
    /// The run now stops at the update that made a weight non-finite, naming the parameter, before any checkpoint holds it.
    /// </summary>
    [SharedDataFact]
    public void AnUpdateThatMakesAWeightNonFiniteStopsTheRunBeforeACheckpointHoldsIt()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        var dir = Path.Combine(Temp, "ckpt-diverged");
        var (model, tokens) = Fresh(texts);
        using (model)
        {
            var options = Options(dir, steps: 30);
            (options.LearningRate, options.WarmupSteps, options.CheckpointEvery) = (100, 0, 1);
            var e = Assert.Throws<InvalidOperationException>(() => new TeacherPretrainer(new MLContext(seed: 1), options).Train(model, tokens));
            Assert.Contains("Pretraining diverged at step ", e.Message);
            using var last = TeacherModel.Load(dir);
            using var scope = TorchSharp.torch.NewDisposeScope();
            Assert.All(last.NamedParameters(), p => Assert.True(p.Parameter.isfinite().all().item<bool>(), p.Name));
        }
    }

    [SharedDataFact]
    public void WeightedStreamStressesTheVerbalizerWordAndTrainsTheTask()
    {
        var texts = TeacherPretrainingTests.Reviews(60);
        var (model, _) = Fresh(texts);
        using (model)
        {
            var template = TaskTemplates.Sst2;
            var documents = new List<(string Prefix, string Target)> { template.ClassificationParts("a gorgeous film", null) is var (p, s) ? (p, " great" + s) : default };
            var (tokens, weights) = TeacherPretrainer.WeightedTokenStream(model.Tokenizer!, documents, 20f);
            var full = model.Tokenizer!.Encode("a gorgeous film It was great", addBos: true);
            Assert.Equal(full.Append(model.Tokenizer.EosId!.Value), tokens);
            int target = model.Tokenizer.Encode(" great", false).Length;
            // Only the verbalizer word's tokens weigh 20; the prefix and the EOS weigh 1.
            Assert.Equal(Enumerable.Repeat(1f, full.Length - target).Concat(Enumerable.Repeat(20f, target)).Append(1f), weights);
            Assert.Throws<ArgumentException>(() => new TeacherPretrainer(new MLContext(seed: 1), Options(null)).Train(model, tokens, weights[..^1]));

            // Trained on labelled rows through the template with a weighted label word, the teacher learns the label:
            // its verbalizer prefers the right word on the rows it saw (chance is 50 %).
            var rows = new[] { ("a gorgeous , moving film", "1"), ("dull , lifeless and boring", "0"), ("a joyous triumph", "1"), ("a tedious mess", "0") };
            var labelled = Enumerable.Range(0, 40).SelectMany(_ => rows).Select(r =>
            {
                var (prefix, suffix) = template.ClassificationParts(r.Item1, null);
                return (prefix, template.Verbalizer[r.Item2] + suffix);
            }).ToList();
            var (t, w) = TeacherPretrainer.WeightedTokenStream(model.Tokenizer, labelled, 20f);
            new TeacherPretrainer(new MLContext(seed: 1), new TeacherPretrainerOptions { Steps = 100, BatchSize = 8, SequenceLength = 32, LearningRate = 1e-2, WarmupSteps = 5 })
                .Train(model, t, w);
            var classifier = new VerbalizerClassifier(model, template, ["0", "1"], calibrate: false);
            var predicted = classifier.Predict(rows.Select(r => (r.Item1, (string?)null)).ToList());
            Assert.Equal(rows.Select(r => int.Parse(r.Item2)), predicted);
        }
    }

    [SharedDataFact]
    public void DropoutTrainsDifferentlyResumesExactlyAndNeverDropsAtInference()
    {
        var texts = TeacherPretrainingTests.Reviews(80);
        TeacherPretrainerOptions WithDropout(string? dir) { var o = Options(dir); o.Dropout = 0.2; return o; }
        var (plain, tokens) = Fresh(texts);
        var (dropped, _) = Fresh(texts);
        using (plain)
        using (dropped)
        {
            new TeacherPretrainer(new MLContext(seed: 1), Options(null)).Train(plain, tokens);
            // The masks come from a generator of the run's: torch's process-wide one, seeded at every step before, is left
            // as the application had it.
            TorchSharp.torch.random.manual_seed(99);
            new TeacherPretrainer(new MLContext(seed: 1), WithDropout(null)).Train(dropped, tokens);
            float[] Draw() { using var r = TorchSharp.torch.rand(4); return r.data<float>().ToArray(); }
            var after = Draw();
            TorchSharp.torch.random.manual_seed(99);
            Assert.Equal(Draw(), after);
            Assert.NotEqual(plain.ContentHash, dropped.ContentHash);

            // After training the module is back in inference mode: scoring twice gives the same numbers.
            var prefixes = new[] { "the film is", "a dull story" };
            var continuations = new[] { " good", " bad" };
            Assert.Equal(dropped.ScoreContinuations(prefixes, continuations), dropped.ScoreContinuations(prefixes, continuations));

            // The masks come from the seed and the step: a killed run resumes to the very same weights.
            var dir = Path.Combine(Temp, "ckpt-dropout");
            Interrupted(texts, tokens, WithDropout(dir));
            var (second, _) = Fresh(texts);
            using (second)
            {
                new TeacherPretrainer(new MLContext(seed: 1), WithDropout(dir)).Train(second, tokens);
                Assert.Equal(dropped.ContentHash, second.ContentHash);
            }
        }
        var bad = Options(null);
        bad.Dropout = 1;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new TeacherPretrainer(new MLContext(seed: 1), bad));
        Assert.Contains("Dropout must be in [0, 1), found 1", e.Message);
    }

    /// <summary>
    /// Pretraining's dropout draws its masks from a generator of the run's, as torch's own dropout draws them from the
    /// process-wide generator seeded alike: the same masks and rounding bit for bit, so teachers built before keep their
    /// weights.
    /// </summary>
    [Fact]
    public void TheRunsDropoutGivesTorchsOwnDropoutBitForBit()
    {
        using var scope = TorchSharp.torch.NewDisposeScope();
        using var source = new TorchSharp.torch.Generator(5);
        var x = TorchSharp.torch.randn([4, 16, 32], generator: source);
        foreach (var p in new[] { 0.1, 0.2, 0.5 })
        {
            TorchSharp.torch.random.manual_seed(77);
            var torchs = TorchSharp.torch.nn.functional.dropout(x, p, training: true);
            using var generator = new TorchSharp.torch.Generator(77);
            var ours = new ResidualDrop(p, generator).Apply(x);
            Assert.Equal(torchs.data<float>().ToArray(), ours.data<float>().ToArray());
        }
    }

    [Fact]
    public void DerivedSeedsDependOnSeedPurposeAndIndices()
    {
        long a = SeedMixer.Derive(1, "pretrain-window", 5);
        Assert.Equal(a, SeedMixer.Derive(1, "pretrain-window", 5));
        Assert.NotEqual(a, SeedMixer.Derive(2, "pretrain-window", 5));
        Assert.NotEqual(a, SeedMixer.Derive(1, "extraction", 5));
        Assert.NotEqual(a, SeedMixer.Derive(1, "pretrain-window", 6));
        Assert.True(a >= 0);
    }
}
