using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Tests.Infrastructure;
using RetriKT.MLNet.Tests.SoftPrompt;

namespace RetriKT.MLNet.Tests.Knowledge;

/// <summary>
/// The extractor's Transform gives any row "the same labelling the store's entries got", but the store's labelling
/// refuses a text it cannot label (UnlabeledData: an empty text, a pair template's row without its second text) while
/// Transform gave such a row the teacher's soft label of "first part + separator + nothing", a confident-looking
/// distribution that says nothing about the row.
/// </summary>
public sealed class ExtractorTransformEmptyTextTests
{
    private static readonly TaskTemplate StoryPair = new()
    {
        Name = "StoryPair",
        Text2Column = "Text2",
        PairSeparator = " ### ",
        ClassificationFormat = "{text} ### {text2} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" },
        MaxNewTokens = 12,
    };

    private sealed class SoftLabelRow
    {
        public string Text { get; set; } = "";
        public float[] SoftLabel { get; set; } = [];
    }

    [SharedDataFact]
    public void ARowTheStoreWouldRefuseIsRefusedNamingTheRowAndTheColumn()
    {
        var mlContext = new MLContext(seed: 3);
        var rows = new[]
        {
            new TextPairRow { Text = "Lily was very happy.", Text2 = "She played with her ball in the sun.", Label = "happy" },
            new TextPairRow { Text = "Tom smiled.", Text2 = "He got a big red car for his birthday.", Label = "happy" },
            new TextPairRow { Text = "Ben was sad.", Text2 = "His toy broke and he cried.", Label = "sad" },
            new TextPairRow { Text = "Anna cried.", Text2 = "Her friend did not want to play.", Label = "sad" },
        };
        var data = mlContext.Data.LoadFromEnumerable(rows);
        using var prompts = mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = StoryPair, SupervisedEpochs = 1, PpoSteps = 0, PromptTokens = 2,
        }).Fit(data);
        var extracted = mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions { SoftPrompts = prompts, SamplesPerLabel = 0 }).Fit(data);

        var withoutSecond = rows.Select(r => new TextPairRow { Text = r.Text, Text2 = r.Text2, Label = r.Label }).ToArray();
        withoutSecond[2].Text2 = "  ";
        var e = Assert.Throws<InvalidOperationException>(() => extracted.Transform(mlContext.Data.LoadFromEnumerable(withoutSecond)).GetColumn<float[]>("SoftLabel").ToList());
        Assert.Equal("KnowledgeExtractor row 2: column 'Text2' (the second text) is empty; template 'StoryPair' reads sentence pairs.", e.Message);
        withoutSecond[2].Text2 = "\u200B";
        e = Assert.Throws<InvalidOperationException>(() => extracted.Transform(mlContext.Data.LoadFromEnumerable(withoutSecond)).GetColumn<float[]>("SoftLabel").ToList());
        Assert.StartsWith("KnowledgeExtractor row 2: column 'Text2' (the second text) holds only characters the tokenizer drops", e.Message);
        var withoutFirst = rows.Select(r => new TextPairRow { Text = r.Text, Text2 = r.Text2, Label = r.Label }).ToArray();
        withoutFirst[1].Text = "";
        e = Assert.Throws<InvalidOperationException>(() => extracted.Transform(mlContext.Data.LoadFromEnumerable(withoutFirst)).GetColumn<float[]>("SoftLabel").ToList());
        Assert.Equal("KnowledgeExtractor row 1: column 'Text' is empty; expected a text for the teacher to label.", e.Message);

        // Whole rows are labelled as the store's few-shot entries were.
        var labelled = mlContext.Data.CreateEnumerable<SoftLabelRow>(extracted.Transform(data), reuseRowObject: false).ToList();
        Assert.Equal(rows.Length, labelled.Count);
        Assert.All(labelled, r => Assert.Equal(1f, r.SoftLabel.Sum(), 4));
    }
}
