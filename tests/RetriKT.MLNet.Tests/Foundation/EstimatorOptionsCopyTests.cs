using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Bridge;
using RetriKT.MLNet.Knowledge;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Student;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;
using RetriKT.MLNet.Tests.Student;
using RetriKT.MLNet.Text;

namespace RetriKT.MLNet.Tests.Foundation;

/// <summary>
/// Every estimator keeps a copy of the options it was built with, as ML.NET's trainers do: an edit of the caller's
/// object afterwards (a settings object reused for the next variant, a field set one line too late) changed what Fit
/// did, with values the constructor never checked (a HiddenSize no head count divides reached the student's config).
/// </summary>
public class EstimatorOptionsCopyTests
{
    [Fact]
    public void TheStudentTrainerFitsWithTheOptionsItWasBuiltWith()
    {
        var ml = new MLContext(seed: 1);
        var data = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(40, 1));
        var keyed = ml.Transforms.Conversion.MapValueToKey("Label").Fit(data).Transform(data);
        var options = new RetrievalClassifierTrainer.Options { HiddenSize = 16, Layers = 1, Heads = 2, MaxLength = 16, Epochs = 2, BatchSize = 8 };
        var trainer = ml.MulticlassClassification.Trainers.RetrievalClassifier(options);
        // Refused when the trainer is built; edited afterwards it reached Fit and failed there, in the student's config.
        options.HiddenSize = 7;
        options.ScoreColumnName = "";
        using var student = trainer.Fit(keyed);
        Assert.Equal(16, student.Dimension);
        Assert.NotNull(student.Transform(keyed).Schema.GetColumnOrNull("Score"));
    }

    [Fact]
    public void TheRetrieverAndTheTokenizerFitWithTheOptionsTheyWereBuiltWith()
    {
        var ml = new MLContext(seed: 1);
        var store = new KnowledgeStore(["neg", "pos"], Enumerable.Range(0, 4).Select(i => KnowledgeEntry.Gold($"text {i}", null, i % 2, 2)))
            .WithEmbeddings([1, 0, 0, 1, 1, 1, 1, -1], 2);
        var options = new KnowledgeRetrieverEstimator.Options { InputColumnName = "Features", K = 2 };
        var retriever = ml.RetriKT().KnowledgeRetriever(store, options);
        options.K = 10; // more than the store holds: Fit refused it
        var queries = ml.Data.LoadFromEnumerable([new QueryRow { Features = [1, 0] }]);
        Assert.Equal(2, retriever.Fit(queries).K);

        var tokenizerOptions = new TextTokenizingEstimator.Options { MaxLength = 16, MinWordFrequency = 1 };
        var tokenizer = ml.RetriKT().TextTokenizer(tokenizerOptions);
        tokenizerOptions.MaxLength = 1; // no room for [CLS] and [SEP]: refused when built
        var texts = ml.Data.LoadFromEnumerable(RetrievalClassifierBehaviourTests.Synthetic(10, 1));
        Assert.Equal(16, tokenizer.Fit(texts).MaxLength);
    }

    [SharedDataFact]
    public void ThePromptTrainerFitsWithTheOptionsAndLabelsItWasBuiltWith()
    {
        var ml = new MLContext(seed: 5);
        var labels = new List<string> { "happy", "sad" };
        var options = new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = SoftPromptPpoTrainerTests.StoryMood, Labels = labels,
            SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 4,
        };
        var trainer = ml.RetriKT().SoftPromptPpoTrainer(options);
        options.PromptTokens = 2;
        labels.Reverse(); // the caller's list: the label order the trainer reported and trained in moved with it
        Assert.Equal(["happy", "sad"], trainer.Labels);
        using var prompts = trainer.Fit(SoftPromptPpoTrainerTests.StoryData(ml));
        Assert.Equal(2 * 4 * 64, prompts.PromptParameterCount);
        Assert.Equal(["happy", "sad"], prompts.Labels);
    }

    [Fact]
    public void TheExtractorChecksItsInputWithTheOptionsItWasBuiltWith()
    {
        var options = new KnowledgeExtractorOptions
        {
            SoftPromptOptions = new SoftPromptPpoOptions { TeacherPath = "never-loaded.bin", Template = SoftPromptPpoTrainerTests.StoryMood },
        };
        var extractor = new MLContext().RetriKT().KnowledgeExtractor(options);
        options.LabelColumnName = "Mood";
        options.SoftPromptOptions.Template = null; // the prompts to fit: their options are the extractor's copy too
        var input = SchemaShapes.Of(SoftPromptPpoTrainerTests.StoryData(new MLContext()).Schema);
        Assert.NotNull(extractor.GetOutputSchema(input).FirstOrDefault(c => c.Name == KnowledgeExtractorTransformer.SoftLabelColumn).Name);
    }

    private sealed class QueryRow
    {
        [VectorType(2)] public float[] Features { get; set; } = [];
    }
}
