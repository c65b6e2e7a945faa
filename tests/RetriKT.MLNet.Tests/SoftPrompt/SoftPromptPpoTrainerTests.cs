using Microsoft.ML;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>Soft prompt tuning and PPO on the real llama2.c stories260K teacher.</summary>
public class SoftPromptPpoTrainerTests
{
    internal static string Stories260K => SharedData.Path("models", "llama2c-stories260K", "stories260K.bin");

    internal static readonly TaskTemplate StoryMood = new()
    {
        Name = "StoryMood",
        ClassificationFormat = "{text} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" },
        MaxNewTokens = 24,
    };

    internal static IDataView StoryData(MLContext mlContext) => mlContext.Data.LoadFromEnumerable(new[]
    {
        new TextPairRow { Text = "Lily was very happy. She played with her ball in the sun.", Label = "happy" },
        new TextPairRow { Text = "Tom smiled. He got a big red car for his birthday.", Label = "happy" },
        new TextPairRow { Text = "The dog was happy and ran in the park with Sue.", Label = "happy" },
        new TextPairRow { Text = "Mia laughed and hugged her mom. They ate cake.", Label = "happy" },
        new TextPairRow { Text = "Ben was sad. His toy broke and he cried.", Label = "sad" },
        new TextPairRow { Text = "The little bird was sad because it lost its home.", Label = "sad" },
        new TextPairRow { Text = "Anna cried. Her friend did not want to play.", Label = "sad" },
        new TextPairRow { Text = "Max felt sad when the rain ruined his kite.", Label = "sad" },
    });

    [SharedDataFact]
    public void SupervisedStageLowersTheFewShotNllAndTheModelRoundTripsAcrossProcesses()
    {
        var mlContext = new MLContext(seed: 5);
        var data = StoryData(mlContext);
        var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 8, PpoSteps = 0, PromptTokens = 4,
        }).Fit(data);
        var report = model.TrainingReport!;
        Assert.True(report.SupervisedNll < report.InitialNll - 0.1, $"stage 1 NLL {report.InitialNll:F3} → {report.SupervisedNll:F3}");
        Assert.Equal(2 * 4 * 64, model.PromptParameterCount);

        var samples = model.Generate(label: 0, count: 3, seed: 11);
        Assert.Equal(3, samples.Count);
        Assert.All(samples, s => Assert.False(string.IsNullOrWhiteSpace(s.Text)));
        Assert.Equal(samples.Select(s => s.Text), model.Generate(0, 3, 11).Select(s => s.Text)); // same seed, same samples

        using var result = CrossProcess.RoundTrip(mlContext, model, data, engineContract: "label-generated");
        Assert.Contains(typeof(SoftPromptTransformer).FullName!, result.LoadedTypes);
        model.Dispose();
    }

    /// <summary>
    /// The default init text is 13 stories260K tokens: cut at the prompt's 8 positions, it dropped the label word appended
    /// to it, every label's prompt started the same, and before training both labels wrote the very same samples.
    /// </summary>
    [SharedDataFact]
    public void EachLabelsPromptStartsWithItsLabelWordWhenTheInitTextFillsThePrompt()
    {
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        using var untrained = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PpoSteps = 0 }).Fit(data);
        Assert.Equal(13, untrained.Teacher.Tokenizer!.Encode("Write an example:", addBos: false).Length); // more than the default 8 positions

        // The saved prompts (Prompts.bin: a count, then labels × 8 × 64 floats): each label's last positions are its word's embeddings.
        using var zip = new MemoryStream();
        mlContext.Model.Save(untrained, data.Schema, zip);
        using var archive = new System.IO.Compression.ZipArchive(new MemoryStream(zip.ToArray()));
        using var reader = new BinaryReader(archive.Entries.Single(e => e.FullName.EndsWith("Prompts.bin", StringComparison.Ordinal)).Open());
        var prompts = Enumerable.Range(0, reader.ReadInt32()).Select(_ => reader.ReadSingle()).ToArray();
        const int hidden = 64, positions = 8;
        using var scope = TorchSharp.torch.NewDisposeScope();
        var vocabulary = untrained.Teacher.EmbedVocabulary();
        foreach (var (word, label) in new[] { (" happy", 0), (" sad", 1) })
        {
            var ids = untrained.Teacher.Tokenizer.EncodeContinuation(word, afterText: true); // " happy" is 2 of stories260K's 512 tokens
            for (int i = 0; i < ids.Length; i++)
            {
                int position = positions - ids.Length + i;
                var embedding = vocabulary[ids[i]].to(TorchSharp.torch.ScalarType.Float32).data<float>().ToArray();
                Assert.True(embedding.SequenceEqual(prompts.AsSpan((label * positions + position) * hidden, hidden).ToArray()),
                    $"label {label}'s prompt position {position} should hold the embedding of token {ids[i]} of '{word}'");
            }
        }
    }

    /// <summary>
    /// PPO at a tiny temperature samples and scores as generation does: logits divided by 1e-40 overflowed float32 when
    /// the rollouts were scored, and the losses came out NaN.
    /// </summary>
    [SharedDataFact]
    public void PpoAtATinyTemperatureScoresItsRolloutsWithFiniteNumbers()
    {
        var mlContext = new MLContext(seed: 3);
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 4, Temperature = 1e-40,
            PpoSteps = 2, RolloutsPerStep = 8, MiniBatchSize = 8, PpoEpochs = 1, MaxNewTokens = 8,
        }).Fit(StoryData(mlContext));
        var steps = model.TrainingReport!.PpoSteps;
        Assert.Equal(2, steps.Count);
        Assert.All(steps, s => Assert.True(double.IsFinite(s.Reward) && double.IsFinite(s.Kl) && double.IsFinite(s.PolicyLoss) && double.IsFinite(s.ValueLoss),
            $"step {s.Step}: reward {s.Reward}, KL {s.Kl}, policy loss {s.PolicyLoss}, value loss {s.ValueLoss}"));
    }

    [SharedDataFact]
    public void PpoRaisesARewardWithAKnownOptimumWhileKlStaysBoundedAndSameSeedRepeats()
    {
        // Stories260K writes "boy" in about one sample in five; a reward of 1 for samples containing it has a known optimum.
        // The policy is read from 128 samples of the tuned prompts rather than from the 16 rollouts of a step, whose
        // rewards are too noisy for a threshold (one to three "boy"s in 16 either way). Over MLContext seeds 1–8 the
        // share rose from 0.22 to 0.33–0.58 after 24 steps (seed 3: 0.58).
        (SoftPromptTrainingReport Report, double WordShare) Run(int steps)
        {
            var mlContext = new MLContext(seed: 3);
            using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
            {
                TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 4,
                PpoSteps = steps, RolloutsPerStep = 16, MiniBatchSize = 8, PpoEpochs = 4, PpoLearningRate = 0.05,
                Reward = new WordReward("boy"), MaxNewTokens = 12,
            }).Fit(StoryData(mlContext));
            var samples = model.Generate(0, 64, 101).Concat(model.Generate(1, 64, 102)).ToList();
            return (model.TrainingReport!, samples.Count(x => x.Text.Contains("boy", StringComparison.Ordinal)) / (double)samples.Count);
        }
        var before = Run(0).WordShare;
        var (report, after) = Run(24);
        Assert.True(after > before + 0.15, $"share of samples with the rewarded word should rise: {before:F3} before PPO, {after:F3} after 24 steps " +
            $"(rollout rewards {string.Join(", ", report.PpoSteps.Select(s => s.Reward.ToString("F2")))})");
        Assert.All(report.PpoSteps, s => Assert.InRange(s.Kl, -1, 40));
        Assert.Equal(report.PpoSteps.Take(2).Select(s => s.Reward), Run(2).Report.PpoSteps.Select(s => s.Reward));
    }

    [SharedDataFact]
    public void TheTrustRegionUndoesAnUpdateThatMovesThePolicyTooFarAndHalvesTheRate()
    {
        // At a rate far above the library's, PPO's updates leave any small trust region; with the region on, every
        // iteration must end inside it, an overshooting update must be undone, and the next iteration runs at half the rate.
        SoftPromptTrainingReport Run(double? maxUpdateKl)
        {
            var mlContext = new MLContext(seed: 3);
            using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
            {
                TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 4,
                PpoSteps = 6, RolloutsPerStep = 16, MiniBatchSize = 8, PpoEpochs = 4, PpoLearningRate = 0.3, MaxUpdateKl = maxUpdateKl,
                Reward = new WordReward("boy"), MaxNewTokens = 12,
            }).Fit(StoryData(mlContext));
            return model.TrainingReport!;
        }
        const double limit = 0.01;
        var guarded = Run(limit).PpoSteps;
        var free = Run(null).PpoSteps;
        string Show(IEnumerable<PpoStepMetrics> steps) => string.Join("; ", steps.Select(s =>
            $"step {s.Step}: kept {s.KeptUpdates}{(s.RolledBack ? " rolled back" : "")}, final KL {s.FinalApproxKl:G3}, KL to stage 1 {s.Kl:G3}, rate {s.LearningRate:G3}"));

        Assert.All(free, s => Assert.Equal((8, false), (s.KeptUpdates, s.RolledBack)));
        Assert.True(guarded.Any(s => s.RolledBack), $"no update was undone at rate 0.3 with a region of {limit}: {Show(guarded)}");
        Assert.All(guarded, s => Assert.True(s.FinalApproxKl <= limit, $"step {s.Step} ended outside the region: {Show(guarded)}"));
        for (int i = 1; i < guarded.Count; i++)
            if (guarded[i - 1].RolledBack)
                Assert.True(Math.Abs(guarded[i].LearningRate - guarded[i - 1].LearningRate / 2) < 1e-12, $"the rate did not halve after step {i}: {Show(guarded)}");
        // The prompts really moved less: the policy's KL to the stage-1 prompts, measured on each iteration's rollouts.
        Assert.True(guarded.Max(s => s.Kl) < free.Max(s => s.Kl) / 2, $"guarded: {Show(guarded)}; free: {Show(free)}");
    }

    /// <summary>
    /// A <see cref="RetriKTReward"/> given in the options kept its memory of recent samples from one Fit to the next: the
    /// same trainer fitted again with the same seed measured the novelty of its rollouts against the previous run's, and
    /// its rewards and prompts came out otherwise from the second PPO step on (here 0.549 against 0.489).
    /// </summary>
    [SharedDataFact]
    public void AGivenDefaultRewardStartsEachFitAfreshSoTheSameSeedTrainsTheSamePrompts()
    {
        using var teacher = TeacherModel.Load(Stories260K);
        var mlContext = new MLContext(seed: 3);
        var trainer = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 2,
            PpoSteps = 2, RolloutsPerStep = 8, MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 8,
            Reward = new RetriKTReward(new VerbalizerClassifier(teacher, StoryMood, ["happy", "sad"]), minWords: StoryMood.MinWords),
        });
        using var first = trainer.Fit(StoryData(mlContext));
        using var second = trainer.Fit(StoryData(mlContext));
        Assert.Equal(first.TrainingReport!.PpoSteps.Select(s => (s.Reward, s.Diversity)), second.TrainingReport!.PpoSteps.Select(s => (s.Reward, s.Diversity)));
        Assert.Equal(first.ContentHash(), second.ContentHash()); // the same prompts
    }

    [SharedDataFact]
    public void BadInputFailsBeforeTrainingWithTheProblemNamed()
    {
        var mlContext = new MLContext();
        SoftPromptTransformer Fit(IDataView data, TaskTemplate? template = null, string label = "Label") =>
            mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
            {
                TeacherPath = Stories260K, Template = template ?? StoryMood, LabelColumnName = label, SupervisedEpochs = 1, PpoSteps = 0,
            }).Fit(data);

        var onlyHappy = mlContext.Data.LoadFromEnumerable(new[] { new TextPairRow { Text = "Lily was happy.", Label = "happy" } });
        Assert.Contains("Label 'sad' has no example", Assert.Throws<ArgumentException>(() => Fit(onlyHappy)).Message);

        var empty = mlContext.Data.LoadFromEnumerable(new[] { new TextPairRow { Text = " ", Label = "happy" }, new TextPairRow { Text = "x y z", Label = "sad" } });
        Assert.Contains("Row 0: column 'Text' is empty", Assert.Throws<ArgumentException>(() => Fit(empty)).Message);

        var numericLabel = mlContext.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = 1f } });
        Assert.Contains("must be String or a key type", Assert.Throws<ArgumentOutOfRangeException>(() => Fit(numericLabel)).Message);

        var missingColumn = StoryMood with { TextColumn = "Sentence" };
        // The same wording as the knowledge extractor's (it said "Template 'StoryMood' names column 'Sentence', which the data does not have").
        Assert.Equal("Column 'Sentence' (String) is needed by template 'StoryMood'; found no such column. Columns: 'Text', 'Text2', 'Label'.",
            Assert.Throws<ArgumentOutOfRangeException>(() => Fit(StoryData(mlContext), missingColumn)).Message);
        Assert.Equal("Column 'Label2' (String) is needed by template 'StoryMood'; found Single.", Assert.Throws<ArgumentOutOfRangeException>(() =>
            Fit(mlContext.Data.LoadFromEnumerable(new[] { new { Text = "a b c", Label = "happy", Label2 = 1f } }), StoryMood with { Text2Column = "Label2", ClassificationFormat = "{text} {text2} The story was{label}" })).Message);

        var noWord = StoryMood with { Verbalizer = new Dictionary<string, string> { ["happy"] = " happy" } };
        Assert.Throws<ArgumentException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = Stories260K, Template = noWord, Labels = ["happy", "sad"] }).Fit(StoryData(mlContext)));

        var missingTeacher = Assert.Throws<FileNotFoundException>(() => mlContext.RetriKT().SoftPromptPpoTrainer("/nonexistent/teacher.bin", StoryMood).Fit(StoryData(mlContext)));
        Assert.Contains("/nonexistent/teacher.bin", missingTeacher.Message);
    }

    /// <summary>
    /// A key label column fitted on other rows maps a label it never saw to the missing key 0: Fit refused it with
    /// "Label column 'Label' holds a missing key (0)." and no row, among few-shot rows a user then had to search by hand.
    /// </summary>
    [SharedDataFact]
    public void AMissingKeyLabelIsNamedByItsRow()
    {
        var mlContext = new MLContext(seed: 1);
        var rows = mlContext.Data.LoadFromEnumerable(new[]
        {
            new TextPairRow { Text = "Lily was very happy. She played with her ball in the sun.", Label = "happy" },
            new TextPairRow { Text = "Ben was sad. His toy broke and he cried.", Label = "sad" },
            new TextPairRow { Text = "Max was angry when the rain ruined his kite.", Label = "angry" },
        });
        var keys = mlContext.Transforms.Conversion.MapValueToKey("Label", keyData: mlContext.Data.LoadFromEnumerable(new[] { new { Label = "happy" }, new { Label = "sad" } }));
        var keyed = keys.Fit(rows).Transform(rows);
        var e = Assert.Throws<ArgumentException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PpoSteps = 0, PromptTokens = 2 }).Fit(keyed).Dispose());
        Assert.Equal("Row 2: label column 'Label' holds a missing key (0); expected one of its 2 key values [happy, sad].", e.Message);
    }

    [SharedDataFact]
    public void LoadingAModelWhoseTeacherIsGoneOrDifferentFailsClearly()
    {
        using var folder = new TempDir("retrikt-teacher-");
        var dir = folder.Path;
        var teacherCopy = Path.Combine(dir, "stories260K.bin");
        File.Copy(Stories260K, teacherCopy);
        File.Copy(Path.Combine(Path.GetDirectoryName(Stories260K)!, "tok512.bin"), Path.Combine(dir, "tok512.bin"));
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = teacherCopy, Template = StoryMood, SupervisedEpochs = 1, PpoSteps = 0 }).Fit(data);
        var zip = Path.Combine(dir, "model.zip");
        mlContext.Model.Save(model, data.Schema, zip);

        // Different weights at the same path: flip one float of the last tensor (the unused RoPE tables are after it; pick the final norm).
        var bytes = File.ReadAllBytes(teacherCopy);
        int finalNorm = 28 + 4 * (512 * 64 + 5 * 64 + 5 * 64 * 64 + 5 * 32 * 64 * 2 + 5 * 64 * 64 + 5 * 64 + 5 * 172 * 64 * 3);
        BitConverter.GetBytes(BitConverter.ToSingle(bytes, finalNorm) + 0.5f).CopyTo(bytes, finalNorm);
        File.WriteAllBytes(teacherCopy, bytes);
        var different = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(zip, out _));
        Assert.Contains("is not the one the soft prompts were tuned for", Flatten(different));

        File.Delete(teacherCopy);
        var missing = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(zip, out _));
        Assert.Contains("which does not exist", Flatten(missing));
    }

    /// <summary>
    /// With a loaded <see cref="SoftPromptPpoOptions.Teacher"/>, the path model.zip references went unchecked: a path that
    /// held no teacher, or another one, trained and saved prompts that only loading the model refused.
    /// </summary>
    [SharedDataFact]
    public void AGivenTeacherMustBeTheOneAtTeacherPathBeforeTraining()
    {
        using var teacher = TeacherModel.Load(Stories260K);
        using var folder = new TempDir("retrikt-teacher-");
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        SoftPromptTransformer Fit(string path) => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = path, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2 }).Fit(data);

        var missing = folder.File("stories260K.bin");
        Assert.Equal($"SoftPromptPpoOptions.TeacherPath '{missing}' does not exist; model.zip references the teacher given in SoftPromptPpoOptions.Teacher " +
                     "by this path, so it must hold that teacher.", Assert.Throws<FileNotFoundException>(() => Fit(missing)).Message);
        var other = SharedData.Path("models", "hf-tiny-random-gpt2");
        var refused = Assert.Throws<ArgumentException>(() => Fit(other)).Message;
        Assert.StartsWith($"SoftPromptPpoOptions.TeacherPath '{other}' holds another teacher than SoftPromptPpoOptions.Teacher: content hash ", refused);
        Assert.Contains($"expected {teacher.ContentHash}", refused);

        // A copy of the teacher elsewhere is that teacher: its model.zip loads.
        File.Copy(Stories260K, missing);
        File.Copy(Path.Combine(Path.GetDirectoryName(Stories260K)!, "tok512.bin"), folder.File("tok512.bin"));
        var zip = folder.File("model.zip");
        using (var model = Fit(missing)) mlContext.Model.Save(model, data.Schema, zip);
        using var loaded = (SoftPromptTransformer)new MLContext().Model.Load(zip, out _);
        Assert.Equal(teacher.ContentHash, loaded.Teacher.ContentHash);
    }

    /// <summary>
    /// A given teacher is checked against TeacherPath by the path it was loaded from; named with a trailing separator
    /// ("models/llama/"), that path did not match, and the teacher was loaded a second time from disk to compare hashes
    /// (twice its memory and load time for a large teacher). Here the second load would fail: its weights are unreadable.
    /// </summary>
    [SharedDataFact]
    public void AGivenTeacherNamedWithATrailingSeparatorIsNotLoadedAgain()
    {
        using var temp = new TempDir("retrikt-teacher-");
        var source = SharedData.Path("models", "hf-tiny-random-gpt2");
        var folder = Directory.CreateDirectory(temp.File("gpt2")).FullName;
        foreach (var file in Directory.GetFiles(source)) File.Copy(file, Path.Combine(folder, Path.GetFileName(file)));
        using var teacher = TeacherModel.Load(folder + Path.DirectorySeparatorChar);
        File.Delete(Path.Combine(folder, "model.safetensors"));
        UnreadableFile.Create(Path.Combine(folder, "model.safetensors"));

        var mlContext = new MLContext(seed: 1);
        foreach (var path in new[] { folder, folder + Path.DirectorySeparatorChar })
            using (mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
                   { TeacherPath = path, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 0, PpoSteps = 0, PromptTokens = 2 }).Fit(StoryData(mlContext))) { }
    }

    [SharedDataFact]
    public void AModelFindsItsMovedTeacherByContentHash()
    {
        using var temp = new TempDir("retrikt-teacher-");
        var home = Directory.CreateDirectory(temp.File("home")).FullName;
        var moved = Path.Combine(Directory.CreateDirectory(temp.File("moved")).FullName, "teachers");
        var teacherCopy = Path.Combine(home, "stories260K.bin");
        File.Copy(Stories260K, teacherCopy);
        File.Copy(Path.Combine(Path.GetDirectoryName(Stories260K)!, "tok512.bin"), Path.Combine(home, "tok512.bin"));
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        string hash;
        var zip = temp.File("moved.zip");
        using (var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
               { TeacherPath = teacherCopy, Template = StoryMood, SupervisedEpochs = 1, PpoSteps = 0 }).Fit(data))
        {
            hash = model.TeacherHash;
            mlContext.Model.Save(model, data.Schema, zip);
        }
        Directory.Move(home, moved); // the teacher's folder moves (another machine, another layout)

        var lost = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(zip, out _));
        Assert.Contains(hash, Flatten(lost));
        Assert.Contains(home, Flatten(lost)); // names the folders searched

        using (TeacherResolver.SearchIn(moved))
        using (var found = (SoftPromptTransformer)new MLContext().Model.Load(zip, out _))
            Assert.Equal(hash, found.Teacher.ContentHash);

        var beside = Path.Combine(moved, "model.zip"); // the model shipped beside its teacher
        File.Move(zip, beside);
        using (var found = (SoftPromptTransformer)new MLContext().Model.LoadWithTeacherSearch(beside, out _))
            Assert.Equal(hash, found.Teacher.ContentHash);
    }

    /// <summary>
    /// Cancellation was checked only before each iteration's rollouts: a run cancelled after its rollouts went on through
    /// every PPO epoch of the update (here 100 epochs of 8 one-rollout minibatches with no trust region to end them early,
    /// 7.8 s on a 2-core box) before it stopped. It now stops at the next minibatch.
    /// </summary>
    [SharedDataFact]
    public void ACancelledPpoUpdateStopsAtTheNextMinibatchNotAfterEveryEpoch()
    {
        using var cancellation = new CancellationTokenSource();
        var sinceCancel = new System.Diagnostics.Stopwatch();
        var mlContext = new MLContext(seed: 3);
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 4, PpoSteps = 2, RolloutsPerStep = 8,
            MiniBatchSize = 1, PpoEpochs = 100, MaxNewTokens = 16, MaxUpdateKl = null, Reward = new CancellingReward(cancellation, sinceCancel),
            CancellationToken = cancellation.Token,
        }).Fit(StoryData(mlContext)).Dispose());
        Assert.True(sinceCancel.Elapsed < TimeSpan.FromSeconds(3),
            $"cancelled while the first iteration was scored, Fit stopped {sinceCancel.Elapsed.TotalSeconds:F1} s later (one minibatch takes about 0.02 s)");
    }

    /// <summary>
    /// The reward's scoring did not see the token: a run cancelled while its rollouts were scored went on through the
    /// teacher's passes over all of them (64 rollouts: 0.7 s with stories260K on a 2-core box, a real teacher takes
    /// seconds) and then through the step's two evaluation passes (1.5 s more) before it stopped. The built-in reward now
    /// stops at the verbalizer's next pass, and the trainer looks at the token right after the scoring.
    /// </summary>
    [SharedDataFact]
    public void ARunCancelledWhileTheBuiltInRewardScoresStopsInsideTheScoring()
    {
        using var cancellation = new CancellationTokenSource();
        var mlContext = new MLContext(seed: 3);
        using var teacher = TeacherModel.Load(Stories260K);
        var scorer = new CancellingScorer(new VerbalizerClassifier(teacher, StoryMood, ["happy", "sad"]), cancellation);
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Teacher = teacher, Template = StoryMood, SupervisedEpochs = 0, PromptTokens = 4, PpoSteps = 2, RolloutsPerStep = 64,
            MaxNewTokens = 16, Reward = new RetriKTReward(scorer, minWords: StoryMood.MinWords), CancellationToken = cancellation.Token,
        }).Fit(StoryData(mlContext)).Dispose());
        Assert.True(scorer.StoppedInside, "cancelled as the rollouts were scored, the teacher still scored all 64 of them");
    }

    /// <summary>
    /// The NLL passes over every few-shot example before and after stage 1 did not look at the token: a run cancelled
    /// during one went on through it, and with no epoch and no PPO step Fit returned prompts as if it had never been
    /// cancelled.
    /// </summary>
    [SharedDataFact]
    public void ARunCancelledBeforeItsNllPassesStopsThere()
    {
        using var cancellation = new CancellationTokenSource();
        cancellation.Cancel();
        var mlContext = new MLContext(seed: 3);
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 0, PpoSteps = 0, PromptTokens = 2,
            CancellationToken = cancellation.Token,
        }).Fit(StoryData(mlContext)).Dispose());
    }

    private static string Flatten(Exception e) => e.InnerException is null ? e.Message : e.Message + " | " + Flatten(e.InnerException);

    /// <summary>A reward whose optimum is known: 1 when the sample contains the word, else 0.</summary>
    private sealed class WordReward(string word) : IRewardFunction
    {
        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples) => samples
            .Select(s => TextStatistics.Words(s.Generated).Contains(word) ? new RewardBreakdown(1, 1, 0, 0) : new RewardBreakdown(0, 0, 0, 0))
            .ToList();
    }

    /// <summary>The teacher's verbalizer, cancelling the run as the first rollouts are scored; says whether its passes then stopped.</summary>
    private sealed class CancellingScorer(VerbalizerClassifier teacher, CancellationTokenSource cancellation) : ILabelScorer
    {
        public bool StoppedInside { get; private set; }

        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples) => Probabilities(samples, CancellationToken.None);

        public float[][] Probabilities(IReadOnlyList<(string Text, string? Text2)> samples, CancellationToken token)
        {
            cancellation.Cancel();
            try { return teacher.Probabilities(samples, null, token); }
            catch (OperationCanceledException) { StoppedInside = true; throw; }
        }
    }

    /// <summary>A reward that cancels the run when the first rollouts are scored, and starts the clock.</summary>
    private sealed class CancellingReward(CancellationTokenSource cancellation, System.Diagnostics.Stopwatch sinceCancel) : IRewardFunction
    {
        public IReadOnlyList<RewardBreakdown> Score(IReadOnlyList<RolloutSample> samples)
        {
            cancellation.Cancel();
            sinceCancel.Restart();
            return samples.Select(_ => new RewardBreakdown(0.5, 0.5, 0, 0)).ToList();
        }
    }
}
