using System.Globalization;
using Microsoft.ML;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.Samples.Data;

namespace RetriKT.MLNet.Tests.Pipeline;

/// <summary>
/// What the pipeline refuses before any work: settings that prompt tuning, extraction or the student would refuse
/// only hours later (<see cref="RetriKTPipelineOptions.Validate"/>), and a task whose dev or test rows carry a label
/// the task does not have (they were left out of the accuracy without a word). Nothing here trains or generates.
/// </summary>
public sealed class PipelineValidationTests : IDisposable
{
    private readonly TempDir _folder = new("retrikt-pipeline-validation-");

    public void Dispose() => _folder.Dispose();

    [Theory]
    [InlineData("ExtractionBatchSize", "0", "Extraction settings: BatchSize must be positive, found 0.")]
    [InlineData("MaxAttemptsFactor", "0.5", "Extraction settings: MaxAttemptsFactor must be a finite number >= 1, found 0.5.")]
    [InlineData("MaxAttemptsFactor", "Infinity", "Extraction settings: MaxAttemptsFactor must be a finite number >= 1, found Infinity.")]
    [InlineData("FidelityThreshold", "2", "Extraction settings: FidelityThreshold must be in [0, 1], found 2.")]
    [InlineData("FidelityThreshold", "NaN", "Extraction settings: FidelityThreshold must be in [0, 1], found NaN.")]
    [InlineData("PromptTokens", "0", "Prompt settings: PromptTokens must be positive, found 0.")]
    [InlineData("StudentMaxVocabulary", "5", "StudentMaxVocabulary must be at least 7 (the 5 special tokens and 2 pieces), found 5.")]
    [InlineData("StoreValidationShare", "1.5", "StoreValidationShare must be in [0, 1), found 1.5.")]
    [InlineData("StoreValidationShare", "-0.1", "StoreValidationShare must be in [0, 1), found -0.1.")]
    [InlineData("StoreValidationShare", "NaN", "StoreValidationShare must be in [0, 1), found NaN.")]
    [InlineData("FewShotDevTuningShare", "2", "FewShotDevTuningShare must be in (0, 1] (or null for 0.5), found 2.")]
    [InlineData("FewShotDevTuningShare", "0", "FewShotDevTuningShare must be in (0, 1] (or null for 0.5), found 0.")]
    [InlineData("FewShotDevMixShare", "-0.5", "FewShotDevMixShare must be in (0, 1] (or null for FewShotDevTuningShare's), found -0.5.")]
    [InlineData("FewShotDevMixShare", "NaN", "FewShotDevMixShare must be in (0, 1] (or null for FewShotDevTuningShare's), found NaN.")]
    [InlineData("StoreVariantsPerSample", "-1", "StoreVariantsPerSample must be >= 0, found -1.")]
    // The corpus counts were refused only when the corpus was drawn: after extraction, or after the student trained.
    [InlineData("StoreCorpusRows", "0", "StoreCorpusRows must be >= 1, found 0.")]
    [InlineData("StoreCorpusTuningRows", "-1", "StoreCorpusTuningRows must be >= 1, found -1.")]
    [InlineData("TuningCorpusRows", "0", "TuningCorpusRows must be >= 1 (or null for 800), found 0.")]
    public void ASettingTheLaterStagesWouldRefuseIsRefusedWhenThePipelineIsBuilt(string field, string value, string expected)
    {
        var options = new RetriKTPipelineOptions();
        var info = typeof(RetriKTPipelineOptions).GetField(field)!;
        var type = Nullable.GetUnderlyingType(info.FieldType) ?? info.FieldType;
        info.SetValue(options, Convert.ChangeType(value, type, CultureInfo.InvariantCulture));

        var e = Assert.Throws<ArgumentOutOfRangeException>(options.Validate);
        Assert.Equal(expected, e.Message);
    }

    [Fact]
    public void TheDefaultsTheEvaluatedRecipeAndTheRangesEdgesAreAccepted()
    {
        new RetriKTPipelineOptions().Validate();
        RetriKTPipelineOptions.EvaluatedRecipe().Validate();
        new RetriKTPipelineOptions
        {
            StoreValidationShare = 0, FewShotDevTuningShare = 1, FewShotDevMixShare = 1, StoreVariantsPerSample = 0, StudentMaxVocabulary = 7,
            FidelityThreshold = 1, MaxAttemptsFactor = 1, PpoMaxUpdateKl = 0,
        }.Validate();
    }

    [Fact]
    public void ACorpusPathThatIsNotThereOrATuningCorpusWithNoRowsToJoinIsRefusedWithoutReadingAnyCorpus()
    {
        var missing = _folder.File("no-such-corpus");
        var store = Assert.Throws<FileNotFoundException>(new RetriKTPipelineOptions { StoreCorpus = missing }.Validate);
        Assert.Equal($"StoreCorpus '{missing}' is neither a file nor a folder.", store.Message);
        var tuning = Assert.Throws<FileNotFoundException>(new RetriKTPipelineOptions { TuningCorpus = missing }.Validate);
        Assert.Equal($"TuningCorpus '{missing}' is neither a file nor a folder.", tuning.Message);

        // The folder exists; Validate does not read it (it holds no .txt file, which only a draw would find out).
        var corpus = _folder.Path;
        new RetriKTPipelineOptions { StoreCorpus = corpus, TuningCorpus = corpus }.Validate();
        var noShare = Assert.Throws<ArgumentException>(new RetriKTPipelineOptions { TuningCorpus = corpus, StoreValidationShare = 0 }.Validate);
        Assert.Equal($"TuningCorpus '{corpus}' joins the teacher-labelled tuning rows, which need StoreValidationShare > 0 and " +
                     "TuneOnFewShotDev; found StoreValidationShare 0 and TuneOnFewShotDev True.", noShare.Message);
        var noDev = Assert.Throws<ArgumentException>(new RetriKTPipelineOptions { TuningCorpus = corpus, TuneOnFewShotDev = false }.Validate);
        Assert.Equal($"TuningCorpus '{corpus}' joins the teacher-labelled tuning rows, which need StoreValidationShare > 0 and " +
                     "TuneOnFewShotDev; found StoreValidationShare 0.1 and TuneOnFewShotDev False.", noDev.Message);

        // The harness's --set goes through the same check, and says which flag it came from.
        var set = Assert.Throws<ArgumentException>(() => RetriKT.Evaluation.HarnessSettings.PipelineWith(new Dictionary<string, string> { ["TuningCorpus"] = missing }));
        Assert.Equal($"--set: TuningCorpus '{missing}' is neither a file nor a folder.", set.Message);
    }

    [Fact]
    public void TheConstructorRunsTheseChecks()
    {
        using var teacher = TinyTeacher();
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => new RetriKTPipeline(new MLContext(seed: 1), teacher, _folder.Path,
            new RetriKTPipelineOptions { ExtractionBatchSize = 0 }));
        Assert.Equal("Extraction settings: BatchSize must be positive, found 0.", e.Message);
    }

    [Fact]
    public void ADevOrTestRowWithALabelOutsideTheTasksLabelsIsRefusedByEveryEntryPointBeforeAnyWork()
    {
        var task = EmbeddedCafeReviews.Task(testPerLabel: 2);
        var test = task.Test.Select((r, i) => i == 2 ? new TextPairRow { Text = r.Text, Label = "Positive" } : r).ToList();
        var badTest = task with { Test = test };
        const string testError = "Task 'CafeReviews': test row 3: label 'Positive' is not one of [negative, positive].";
        var dev = task.Dev.Select((r, i) => i == 1 ? new TextPairRow { Text = r.Text, Label = "neutral" } : r).ToList();
        var badDev = task with { Dev = dev };
        const string devError = "Task 'CafeReviews': dev row 2: label 'neutral' is not one of [negative, positive].";

        Assert.Equal(testError, Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(badTest)).Message);
        Assert.Equal(devError, Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(badDev)).Message);

        using var teacher = TinyTeacher();
        var ml = new MLContext(seed: 1);
        var pipeline = new RetriKTPipeline(ml, teacher, _folder.Path);
        // Any model: the task is refused before it is used.
        var model = ml.Transforms.CopyColumns("Copy", "Text").Fit(FewShotTask.ToDataView(ml, task.Train));
        foreach (var (bad, error) in new[] { (badTest, testError), (badDev, devError) })
        {
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.Score(bad, model)).Message);
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.EvaluateTeacher(bad)).Message);
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.EvaluateFewShotStudent(bad)).Message);
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.TrainStudent(bad, StoreExtraction.FewShotRows(bad))).Message);
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.ExtractStore(bad)).Message);
            Assert.Equal(error, Assert.Throws<ArgumentException>(() => pipeline.Run(bad)).Message);
        }

        // A training row: the same line, from the pipeline and from the few-shot store alike.
        var badTrain = task with { Train = [.. task.Train, new TextPairRow { Text = "fine coffee.", Label = "neutral" }] };
        string trainError = $"Task 'CafeReviews': train row {task.Train.Count + 1}: label 'neutral' is not one of [negative, positive].";
        Assert.Equal(trainError, Assert.Throws<ArgumentException>(() => StoreExtraction.FewShotRows(badTrain)).Message);
        Assert.Equal(trainError, Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(badTrain)).Message);
    }

    /// <summary>
    /// Rows whose texts do not fit the task's template, and a label listed twice, were taken without a word: a second text
    /// in a one-text task was ignored by the teacher and the student alike, a pair task's row without its second text was
    /// scored on the first alone, an empty text was classified as one, and a repeated label failed deep inside with
    /// "An item with the same key has already been added". Each is now one line naming the task, split and row.
    /// </summary>
    [Fact]
    public void ARowWhoseTextsDoNotFitTheTemplateOrARepeatedLabelIsRefusedBeforeAnyWork()
    {
        var task = EmbeddedCafeReviews.Task(testPerLabel: 2);
        TextPairRow Row(string text, string text2, string label) => new() { Text = text, Text2 = text2, Label = label };
        var secondText = task with { Dev = task.Dev.Select((r, i) => i == 1 ? Row(r.Text, "the staff", r.Label) : r).ToList() };
        Assert.Equal("Task 'CafeReviews': dev row 2: a second text ('the staff'), but template 'CafeReviews' reads one text; it would be ignored.",
            Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(secondText)).Message);
        var emptyText = task with { Test = task.Test.Select((r, i) => i == 3 ? Row("  ", "", r.Label) : r).ToList() };
        Assert.Equal("Task 'CafeReviews': test row 4: the text is empty.",
            Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(emptyText)).Message);
        // Zero-width characters pass IsNullOrWhiteSpace, but the student's tokenizer drops them: an empty input.
        var zeroWidth = task with { Test = task.Test.Select((r, i) => i == 3 ? Row("\u200B\u200B", "", r.Label) : r).ToList() };
        Assert.StartsWith("Task 'CafeReviews': test row 4: the text holds only characters the tokenizer drops",
            Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(zeroWidth)).Message);
        var twice = task with { Labels = ["negative", "positive", "negative"] };
        Assert.Equal("Task 'CafeReviews': label 'negative' is listed twice in [negative, positive, negative].",
            Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(twice)).Message);

        string[] rteLabels = ["entailment", "not_entailment"];
        List<TextPairRow> Pairs(int n) => Enumerable.Range(0, n).Select(i => Row($"premise {i}", $"hypothesis {i}", rteLabels[i % 2])).ToList();
        var pair = new FewShotTask("RTE", 13, rteLabels, RetriKT.MLNet.SoftPrompt.TaskTemplates.Rte, Pairs(4), Pairs(4), Pairs(4));
        RetriKTPipeline.EvaluateMajority(pair);
        var missing = pair with { Train = pair.Train.Select((r, i) => i == 2 ? Row(r.Text, "", r.Label) : r).ToList() };
        Assert.Equal("Task 'RTE': train row 3: the second text is empty; template 'RTE' reads sentence pairs.",
            Assert.Throws<ArgumentException>(() => RetriKTPipeline.EvaluateMajority(missing)).Message);
        Assert.Equal("Task 'RTE': train row 3: the second text is empty; template 'RTE' reads sentence pairs.",
            Assert.Throws<ArgumentException>(() => StoreExtraction.FewShotRows(missing)).Message);
    }

    /// <summary>A teacher that is never run: the pipeline needs one (with a tokenizer) to be built.</summary>
    private TeacherModel TinyTeacher() =>
        TeacherModel.Create(new TeacherConfig { VocabSize = 300 }, ByteLevelBpeTrainer.Train(["a b c"], 300, _folder.File("tokenizer")));
}
