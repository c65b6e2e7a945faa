using Microsoft.ML;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Foundation;
using RetriKT.MLNet.Tests.Infrastructure;
using static RetriKT.MLNet.Tests.SoftPrompt.SoftPromptPpoTrainerTests;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// What a production user meets around the soft prompts' training, on the real stories260K teacher: model.zip files
/// of SoftPromptTransformer and KnowledgeExtractorTransformer with a damaged part, prompts that do not fit the teacher,
/// a store whose labels are not the prompts', the PPO metrics CSV when training is cancelled, and a verbalizer that
/// gives two labels one word.
/// </summary>
public class SoftPromptPersistenceTests
{
    private static readonly string[] MoodLabels = ["happy", "sad"];

    /// <summary>One small tuned model (a few seconds), its input schema and its saved bytes, shared by the tests.</summary>
    private static readonly Lazy<(SoftPromptTransformer Model, DataViewSchema Schema, byte[] Zip)> Tuned = new(() =>
    {
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2 }).Fit(data);
        return (model, data.Schema, Save(mlContext, model, data.Schema));
    });

    private static byte[] Save(MLContext mlContext, ITransformer model, DataViewSchema schema)
    {
        using var buffer = new MemoryStream();
        mlContext.Model.Save(model, schema, buffer);
        return buffer.ToArray();
    }

    /// <summary>The innermost failure of a plain Model.Load: one printable line.</summary>
    private static string LoadFailure(byte[] zip)
    {
        var e = Assert.ThrowsAny<Exception>(() => new MLContext().Model.Load(new MemoryStream(zip), out _));
        var cause = ModelFiles.Innermost(e);
        Assert.IsType<InvalidDataException>(cause);
        Assert.True(cause.Message.Length < 1000 && cause.Message.All(c => !char.IsControl(c)), cause.Message);
        return cause.Message;
    }

    /// <summary>The first letter of <paramref name="text"/> in <paramref name="bytes"/> changes case: a hand edit (ML.NET's string table is UTF-16).</summary>
    private static byte[] ChangeCase(byte[] bytes, string text)
    {
        var at = bytes.AsSpan().IndexOf(System.Text.Encoding.Unicode.GetBytes(text));
        Assert.True(at >= 0, $"'{text}' not found");
        bytes[at] ^= 0x20;
        return bytes;
    }

    /// <summary>The full name of entry <paramref name="name"/> in the folder of the one entry ending in <paramref name="sibling"/>.</summary>
    private static string Beside(byte[] zip, string sibling, string name)
    {
        using var archive = new System.IO.Compression.ZipArchive(new MemoryStream(zip), System.IO.Compression.ZipArchiveMode.Read);
        var found = archive.Entries.Single(e => e.FullName.EndsWith(sibling, StringComparison.Ordinal)).FullName;
        return found[..^sibling.Length] + name;
    }

    /// <summary>StoryMood soft prompts of 2 tokens per label, all zero, <paramref name="hidden"/> wide, recorded for the teacher at <paramref name="teacherPath"/> with <paramref name="teacherHash"/> (not loaded).</summary>
    private static SoftPromptTransformer ZeroPrompts(MLContext mlContext, string teacherPath, string teacherHash, int hidden) =>
        new(mlContext, teacherPath, teacherHash, TorchSharp.torch.ScalarType.Float32, StoryMood, MoodLabels, "Label", new float[MoodLabels.Length * 2 * hidden], null,
            promptTokens: 2, taskPromptTokens: 0, hidden: hidden, temperature: 1, maxNewTokens: 6, seed: 1, teacher: null, ownsTeacher: false, report: null);

    private static KnowledgeStore Store(IReadOnlyList<string> labels) => new(labels,
    [
        new KnowledgeEntry("Lily was happy and played in the sun.", null, 0, [0.8f, 0.2f], 0.8f, KnowledgeSource.Generated),
        new KnowledgeEntry("Ben cried when his toy broke.", null, 1, [0.3f, 0.7f], 0.7f, KnowledgeSource.Generated),
    ]);

    [SharedDataFact]
    public void PromptsTunedForABFloat16TeacherLoadTheirTeacherInBFloat16()
    {
        // The teacher's content hash covers its dtype. Before the dtype was stored, a saved model loaded its teacher in
        // Float32, found another hash at the very path it was tuned with, and could never be loaded.
        var mlContext = new MLContext(seed: 1);
        var data = StoryData(mlContext);
        using var teacher = RetriKT.MLNet.Teacher.TeacherModel.Load(Stories260K, new RetriKT.MLNet.Teacher.TeacherLoadOptions { DType = TorchSharp.torch.ScalarType.BFloat16 });
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { Teacher = teacher, TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2 }).Fit(data);
        var zip = Save(mlContext, model, data.Schema);
        using var loaded = (SoftPromptTransformer)new MLContext().Model.Load(new MemoryStream(zip), out _);
        Assert.Equal(TorchSharp.torch.ScalarType.BFloat16, loaded.TeacherDType);
        Assert.Equal(teacher.ContentHash, loaded.Teacher.ContentHash);
        Assert.Equal(model.Generate(0, 2, seed: 5).Select(g => g.Text), loaded.Generate(0, 2, seed: 5).Select(g => g.Text));
    }

    /// <summary>
    /// A teacher directory named with a trailing separator ("teachers/sst2/", as shell completion writes it) was recorded
    /// so in model.zip, and loading looked for the teacher inside itself (teachers/sst2/sst2): the model could not be
    /// loaded even on the machine that trained it, beside its teacher.
    /// </summary>
    [SharedDataFact]
    public void PromptsTunedWithATeacherDirectoryEndingInASeparatorLoadWhereTheyWereTuned()
    {
        var (shipped, folder) = RetriKT.Evaluation.TeacherBuilder.LoadShipped(SharedData.RepoRoot, "SST-2");
        shipped.Dispose();
        var mlContext = new MLContext(seed: 1);
        var data = TestData.Sst2Train(mlContext);
        using var model = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        { TeacherPath = folder + Path.DirectorySeparatorChar, Template = TaskTemplates.Sst2, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2 }).Fit(data);

        using var loaded = (SoftPromptTransformer)new MLContext().Model.Load(new MemoryStream(Save(mlContext, model, data.Schema)), out _);
        Assert.Equal(Path.GetFullPath(folder), loaded.TeacherPath);
        Assert.Equal(model.TeacherHash, loaded.Teacher.ContentHash);
        Assert.Equal(model.Generate(1, 2, seed: 5).Select(g => g.Text), loaded.Generate(1, 2, seed: 5).Select(g => g.Text));
    }

    [SharedDataFact]
    public void ADamagedOrTruncatedPartOfASoftPromptModelIsNamed()
    {
        var (_, _, zip) = Tuned.Value;
        var prompts = LoadFailure(ModelFileIntegrityTests.Rewrite(zip, "Prompts.bin", b => { b[b.Length / 2] ^= 0x10; return b; }));
        Assert.Contains("/Prompts.bin' is damaged or was modified", prompts);
        Assert.Contains("expected", prompts);

        var truncated = LoadFailure(ModelFileIntegrityTests.Rewrite(zip, "Prompts.bin", b => b[..^4]));
        Assert.Contains("/Prompts.bin' is damaged or was modified: it is truncated", truncated);

        // The template (JSON in Model.key's string table) edited by hand: "StoryMood" → "storyMood".
        var key = LoadFailure(ModelFileIntegrityTests.Rewrite(zip, Beside(zip, "Prompts.bin", "Model.key"), b => ChangeCase(b, "StoryMood")));
        Assert.Contains("Model.key strings' is damaged or was modified", key);
    }

    [SharedDataFact]
    public void ADamagedStoreOrNestedPromptsOfAnExtractorModelIsNamed()
    {
        var (prompts, schema, _) = Tuned.Value;
        var mlContext = new MLContext(seed: 1);
        var zip = Save(mlContext, new KnowledgeExtractorTransformer(mlContext, prompts, Store(MoodLabels), null), schema);
        using (var loaded = (KnowledgeExtractorTransformer)new MLContext().Model.Load(new MemoryStream(zip), out _))
            Assert.Equal(2, loaded.Store.Count); // the undamaged file loads

        var store = LoadFailure(ModelFileIntegrityTests.Rewrite(zip, "Store.bin", b => { b[b.Length / 2] ^= 0x10; return b; }));
        Assert.Contains("/Store.bin' is damaged or was modified", store);
        var nested = LoadFailure(ModelFileIntegrityTests.Rewrite(zip, "SoftPrompts/Prompts.bin", b => b[..^1]));
        Assert.Contains("SoftPrompts/Prompts.bin' is damaged or was modified: it is truncated", nested);
    }

    [SharedDataFact]
    public void PromptsThatDoNotFitTheTeacherAreRefusedAtLoadNotAtTheFirstGeneration()
    {
        // Prompts 32 wide recorded for the 64-wide stories260K teacher (its real hash, so the resolver finds it): a model
        // written by another build or edited by hand. Loading used to succeed and the first row failed in TorchSharp's cat.
        var (tuned, schema, _) = Tuned.Value;
        var mlContext = new MLContext(seed: 1);
        using var narrow = ZeroPrompts(mlContext, Stories260K, tuned.TeacherHash, hidden: 32);
        var message = LoadFailure(Save(mlContext, narrow, schema));
        Assert.Equal($"model.zip: the soft prompts are 32 wide, but the teacher found at '{Stories260K}' has hidden size 64: " +
                     "they were not tuned for this teacher.", message);
    }

    [SharedDataFact]
    public void AnExtractorModelWhoseStoreHasOtherLabelsThanItsPromptsIsRefused()
    {
        // The same labels in another order: every SoftLabel probability would carry the other label's name.
        var (prompts, schema, _) = Tuned.Value;
        var mlContext = new MLContext(seed: 1);
        var zip = Save(mlContext, new KnowledgeExtractorTransformer(mlContext, prompts, Store(["sad", "happy"]), null), schema);
        Assert.Equal("model.zip: Store.bin holds labels [sad, happy], but its soft prompts are for [happy, sad] (in that order).", LoadFailure(zip));
    }

    [SharedDataFact]
    public void AnUnloadableTeacherOfThatNameIsPassedOverAndNamedWhenNoneMatches()
    {
        using var temp = new TempDir("retrikt-teacher-");
        var broken = Directory.CreateDirectory(temp.File("broken")).FullName;
        var halfCopied = Path.Combine(broken, "stories260K.bin");
        File.WriteAllBytes(halfCopied, new byte[100]); // a copy that stopped early
        var (tuned, schema, zip) = Tuned.Value;

        // Searched first, it used to end the search with its own load error; the teacher where it was tuned is found.
        using (TeacherResolver.SearchIn(broken))
        using (var found = (SoftPromptTransformer)new MLContext().Model.Load(new MemoryStream(zip), out _))
            Assert.Equal(Path.GetFullPath(Stories260K), found.TeacherPath);

        // The only teacher of that name cannot be loaded: the message names the hash, the folders and why it was passed over.
        var mlContext = new MLContext(seed: 1);
        using var stranded = ZeroPrompts(mlContext, halfCopied, tuned.TeacherHash, hidden: 64);
        var message = LoadFailure(Save(mlContext, stranded, schema));
        Assert.Equal($"The soft prompts in this model were tuned for teacher 'stories260K.bin' (sha256 {tuned.TeacherHash}); no teacher of that name " +
                          $"could be loaded from the folders searched: {broken}. Could not be loaded: {halfCopied}: header field 'dim' = 0 is implausible; " +
                          "not a llama2.c checkpoint.", message);
    }

    /// <summary>
    /// A loaded model owns its teacher, and Dispose released it without Generate's lock: a model dropped while another
    /// thread generated with it (a reload, a scope ending) freed the teacher's tensors under that thread's forward pass,
    /// and a later Generate failed inside TorchSharp naming one of its own types. Dispose now waits for the generation
    /// in flight, and a disposed model names itself.
    /// </summary>
    [SharedDataFact]
    public void DisposeWaitsForAGenerationInFlightAndADisposedModelSaysSo()
    {
        var (_, _, zip) = Tuned.Value;
        var loaded = (SoftPromptTransformer)new MLContext().Model.Load(new MemoryStream(zip), out _);
        var expected = loaded.Generate(label: 0, count: 2, seed: 3).Select(g => g.Text).ToList(); // loads the teacher
        var inFlight = Task.Run(() => loaded.Generate(label: 1, count: 2000, seed: 7, batchSize: 8));
        Thread.Sleep(300);
        Assert.False(inFlight.IsCompleted, "the generation ended before Dispose: nothing was in flight");
        loaded.Dispose();
        // Dispose waited: the generation either finished whole or, had Dispose come first, was refused as disposed.
        try { Assert.Equal(2000, inFlight.Result.Count); }
        catch (AggregateException e) when (e.InnerException is ObjectDisposedException d) { Assert.Equal(typeof(SoftPromptTransformer).FullName, d.ObjectName); }
        var after = Assert.Throws<ObjectDisposedException>(() => loaded.Generate(label: 0, count: 2, seed: 3));
        Assert.Equal(typeof(SoftPromptTransformer).FullName, after.ObjectName);
        Assert.Equal(2, expected.Count);
        loaded.Dispose(); // twice is harmless
    }

    [SharedDataFact]
    public void GenerateRefusesABatchSizeThatWouldNeverAdvance()
    {
        var (tuned, _, _) = Tuned.Value;
        // Run aside: the loop this guards against never ends.
        var run = Task.Run(() => Assert.Throws<ArgumentOutOfRangeException>(() => tuned.Generate(label: 0, count: 2, seed: 1, batchSize: 0)));
        Assert.True(run.Wait(TimeSpan.FromSeconds(60)), "Generate with batchSize 0 did not return");
        Assert.Equal("batchSize must be positive, found 0. (Parameter 'batchSize')", run.Result.Message);
    }

    [SharedDataFact]
    public void TheMetricsCsvHoldsEveryFinishedStepWhenPpoIsCancelled()
    {
        using var folder = new TempDir("retrikt-ppo-csv-");
        var csv = folder.File("ppo.csv");
        File.WriteAllText(csv, "a previous run's metrics\n");
        using var cancellation = new CancellationTokenSource();
        var cancelAfterSecondStep = new SyncProgress(p => { if (p.Stage == "PPO" && p.Step == 2) cancellation.Cancel(); });
        var mlContext = new MLContext(seed: 3);
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 2, PromptTokens = 2, PpoSteps = 5, RolloutsPerStep = 4,
            MiniBatchSize = 4, PpoEpochs = 1, MaxNewTokens = 6, MetricsCsvPath = csv, Progress = cancelAfterSecondStep, CancellationToken = cancellation.Token,
        }).Fit(StoryData(mlContext)));

        var rows = File.ReadAllLines(csv);
        Assert.StartsWith("step,reward,fidelity,", rows[0]);
        Assert.Equal(["1", "2"], rows.Skip(1).Select(r => r.Split(',')[0]));
        Assert.All(rows.Skip(1), r => Assert.Equal(rows[0].Split(',').Length, r.Split(',').Length));
        Assert.Equal(["epoch,nll", "1", "2"], File.ReadAllLines(folder.File("ppo.stage1.csv")).Select((r, i) => i == 0 ? r : r.Split(',')[0]));
        // No temp file left beside them.
        Assert.Equal(["ppo.csv", "ppo.stage1.csv"], Directory.GetFiles(folder.Path).Select(Path.GetFileName).Order(StringComparer.Ordinal));
    }

    /// <summary>
    /// A run with no PPO steps, or one cancelled in stage 1, never wrote the PPO metrics file: a previous run's rows
    /// stayed at MetricsCsvPath and read as this run's.
    /// </summary>
    [SharedDataFact]
    public void ARunThatDoesNoPpoStepLeavesNoPreviousRunsRowsInTheMetricsCsv()
    {
        using var folder = new TempDir("retrikt-ppo-csv-");
        var csv = folder.File("ppo.csv");
        var mlContext = new MLContext(seed: 3);
        File.WriteAllText(csv, "step,reward\n1,0.9\n");
        using (mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
               { TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 1, PromptTokens = 2, PpoSteps = 0, MetricsCsvPath = csv }).Fit(StoryData(mlContext))) { }
        Assert.StartsWith("step,reward,fidelity,", Assert.Single(File.ReadAllLines(csv)));

        File.WriteAllText(csv, "step,reward\n1,0.9\n");
        File.WriteAllText(folder.File("ppo.stage1.csv"), "epoch,nll\n1,3\n2,2\n3,1\n");
        using var cancellation = new CancellationTokenSource();
        var cancelInStage1 = new SyncProgress(p => { if (p.Stage == "Stage 1") cancellation.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = Stories260K, Template = StoryMood, SupervisedEpochs = 3, PromptTokens = 2, PpoSteps = 2, RolloutsPerStep = 4,
            MetricsCsvPath = csv, Progress = cancelInStage1, CancellationToken = cancellation.Token,
        }).Fit(StoryData(mlContext)));
        Assert.Single(File.ReadAllLines(csv));
        Assert.Equal(["epoch,nll", "1"], File.ReadAllLines(folder.File("ppo.stage1.csv")).Select((r, i) => i == 0 ? r : r.Split(',')[0]));
    }

    [Fact]
    public void TwoLabelsWithOneVerbalizerWordAreNamed()
    {
        var shared = StoryMood with { Verbalizer = new Dictionary<string, string> { ["happy"] = " good", ["sad"] = " good" } };
        Assert.Equal("Template 'StoryMood': labels 'happy' and 'sad' have the same verbalizer word \" good\"; verbalizer words must differ per label.",
            Assert.Throws<ArgumentException>(() => shared.Validate(MoodLabels)).Message);
    }
}
