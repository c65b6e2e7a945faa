using Microsoft.ML;
using Microsoft.ML.Data;
using RetriKT.MLNet.Knowledge.Extraction;
using RetriKT.MLNet.Pipeline;
using RetriKT.MLNet.SoftPrompt;
using RetriKT.MLNet.Teacher;
using RetriKT.MLNet.Tests.Infrastructure;

namespace RetriKT.MLNet.Tests.SoftPrompt;

/// <summary>
/// A text too long for the teacher's positions (stories260K: 512) is named, with its row and its token counts, before any
/// training or generation: it used to fail inside the teacher minutes in, naming only a batch slot, or, when its context
/// nearly fit, to have its samples cut short at whatever room was left, without a word.
/// </summary>
public sealed class TeacherContextFitTests
{
    private const string Sentence = "Lily was very happy and she played in the sun.";

    private static readonly TaskTemplate SecondPartPair = new()
    {
        Name = "StorySecondPart",
        Text2Column = "Text2",
        Target = GenerationTarget.SecondPart,
        ClassificationFormat = "{text} {text2} The story was{label}",
        Verbalizer = new Dictionary<string, string> { ["happy"] = " happy", ["sad"] = " sad" },
        MaxNewTokens = 24,
    };

    private static TextPairRow[] Rows(string longText) =>
    [
        new() { Text = "Lily was very happy.", Text2 = "She played with her ball in the sun.", Label = "happy" },
        new() { Text = "Tom smiled.", Text2 = "He got a big red car for his birthday.", Label = "happy" },
        new() { Text = "Ben was sad.", Text2 = "His toy broke and he cried.", Label = "sad" },
        new() { Text = longText, Text2 = "Her friend did not want to play.", Label = "sad" },
    ];

    private static SoftPromptTransformer Fit(MLContext mlContext, TaskTemplate template, IEnumerable<TextPairRow> rows) =>
        mlContext.RetriKT().SoftPromptPpoTrainer(new SoftPromptPpoOptions
        {
            TeacherPath = SoftPromptPpoTrainerTests.Stories260K, Template = template, SupervisedEpochs = 1, PpoSteps = 0,
        }).Fit(mlContext.Data.LoadFromEnumerable(rows));

    /// <summary>A first text of as many whole sentences as keep the soft prompt (8) + BOS + its ids + separator within <paramref name="most"/> positions, at least <paramref name="least"/>.</summary>
    private static string ContextOf(TeacherTokenizer tokenizer, string separator, int least, int most)
    {
        for (int n = 1; ; n++)
        {
            var text = string.Join(" ", Enumerable.Repeat(Sentence, n));
            int positions = 8 + 1 + tokenizer.Encode(text + separator, addBos: false).Length;
            if (positions > most) throw new InvalidOperationException($"no whole number of sentences gives {least}..{most} positions (at {n}: {positions})");
            if (positions >= least) return text;
        }
    }

    [SharedDataFact]
    public void ASampleLongerThanTheTeachersContextIsNamedBeforeTraining()
    {
        var mlContext = new MLContext(seed: 1);
        var rows = Rows("Anna cried.").Select(r => new TextPairRow { Text = r.Text + " " + r.Text2, Label = r.Label }).ToList();
        rows[3] = new TextPairRow { Text = string.Join(" ", Enumerable.Repeat(Sentence, 60)), Label = "sad" };
        var error = Assert.Throws<ArgumentException>(() => Fit(mlContext, SoftPromptPpoTrainerTests.StoryMood, rows));
        Assert.StartsWith("Row 3: the soft prompt (8 positions), the context (1 tokens) and the sample (", error.Message);
        Assert.EndsWith("positions, more than the teacher's 512; shorten the row's text or lower PromptTokens.", error.Message);
    }

    [SharedDataFact]
    public void AContextThatLeavesTooLittleRoomForASampleIsNamedBeforeTraining()
    {
        using var teacher = TeacherModel.Load(SoftPromptPpoTrainerTests.Stories260K);
        // The row fits stage 1 (its second part is a few tokens) but leaves fewer than MaxNewTokens = 24 to generate in.
        var text = ContextOf(teacher.Tokenizer!, SecondPartPair.PairSeparator, least: 512 - 23, most: 512 - 12);
        var error = Assert.Throws<ArgumentException>(() => Fit(new MLContext(seed: 1), SecondPartPair, Rows(text)));
        Assert.Matches(@"^Row 3: the soft prompt \(8 positions\) and the context \(\d+ tokens\) leave \d+ of the teacher's 512 positions for a sample, " +
                       @"fewer than MaxNewTokens = 24; shorten the text, or lower MaxNewTokens or PromptTokens\.$", error.Message);

        // With room for 24 new tokens it trains; an extraction then names a context text that leaves too little room.
        var mlContext = new MLContext(seed: 1);
        var fits = ContextOf(teacher.Tokenizer!, SecondPartPair.PairSeparator, least: 512 - 60, most: 512 - 24);
        using var prompts = Fit(mlContext, SecondPartPair, Rows(fits));
        var extraction = Assert.Throws<ArgumentException>(() => mlContext.RetriKT().KnowledgeExtractor(new KnowledgeExtractorOptions
        {
            SoftPrompts = prompts, SamplesPerLabel = 2, BatchSize = 2, ContextTexts = ["Tom ran to the park.", text],
        }).Fit(mlContext.Data.LoadFromEnumerable(Rows(fits))));
        Assert.StartsWith("ContextTexts[1]: the soft prompt (8 positions) and the context (", extraction.Message);
    }

    /// <summary>
    /// Generate and Transform took any context: one that left the teacher 8 of MaxNewTokens = 24 positions gave samples
    /// of 8 tokens marked unfinished, without a word, and one that did not fit failed inside the teacher naming "Prompt 0".
    /// </summary>
    [SharedDataFact]
    public void GenerateAndTransformNameAContextThatLeavesTooLittleRoomForASample()
    {
        var mlContext = new MLContext(seed: 1);
        using var teacher = TeacherModel.Load(SoftPromptPpoTrainerTests.Stories260K);
        var tooLong = ContextOf(teacher.Tokenizer!, SecondPartPair.PairSeparator, least: 512 - 23, most: 512 - 12);
        using var prompts = Fit(mlContext, SecondPartPair, Rows("Anna cried."));

        var generate = Assert.Throws<ArgumentException>(() => prompts.Generate(label: 0, count: 2, seed: 1, contexts: ["Tom ran to the park.", tooLong]));
        Assert.Matches(@"^contexts\[1\]: the soft prompt \(8 positions\) and the context \(\d+ tokens\) leave \d+ of the teacher's 512 positions for a sample, " +
                       @"fewer than MaxNewTokens = 24; shorten the text, or lower MaxNewTokens or PromptTokens\.$", generate.Message);

        var rows = mlContext.Data.LoadFromEnumerable(new TextPairRow[] { new() { Text = "Tom ran to the park.", Label = "happy" }, new() { Text = tooLong, Label = "sad" } });
        var transform = Assert.Throws<ArgumentException>(() => prompts.Transform(rows).GetColumn<string>("GeneratedText").ToList());
        Assert.StartsWith("Row 1: the soft prompt (8 positions) and the context (", transform.Message);
    }
}
